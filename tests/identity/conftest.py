from tests.identity.servers import ldap_directory, ldap_settings  # noqa: F401  (shared fixtures)
