"""The local serving backend: one MLflow model server process per deployment, on loopback."""
