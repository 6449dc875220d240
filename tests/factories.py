import factory

from apps.accounts.models import Membership, Team, User
from apps.clusters.models import Cluster, ClusterGrant

PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"team{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    team = factory.SubFactory(TeamFactory)
    role = Membership.Role.MEMBER


# ---------------------------------------------------------------- clusters and grants


class ClusterFactory(factory.django.DjangoModelFactory):
    """A cluster row; no host key, credentials or health unless a test sets them."""

    class Meta:
        model = Cluster
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"cluster{n}")
    description = factory.LazyAttribute(lambda c: f"The {c.name} cluster")
    transport = Cluster.Transport.SSH
    login_host = "127.0.0.1"
    login_port = 22
    rest_url = "http://127.0.0.1:6820"
    job_root = "/scratch/{username}/axle-jobs"


class ClusterGrantFactory(factory.django.DjangoModelFactory):
    """An active grant whose cluster username is the user's own name, with no limits."""

    class Meta:
        model = ClusterGrant

    user = factory.SubFactory(UserFactory)
    cluster = factory.SubFactory(ClusterFactory)
    status = ClusterGrant.Status.ACTIVE
    cluster_username = factory.LazyAttribute(lambda g: g.user.username)
    allowed_partitions = factory.LazyFunction(lambda: ["debug"])
    request_reason = "Training runs"
