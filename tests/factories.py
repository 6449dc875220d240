import factory

from apps.accounts.models import Membership, Team, User
from apps.clusters.models import Cluster, ClusterGrant
from apps.clusters.services import cluster_state_json
from apps.integrations.slurm.base import ClusterState, NodeInfo, PartitionInfo
from apps.sweeps.models import Sweep

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


def local_state() -> dict:
    """The local cluster's configuration as the hub caches it (see compose/local): debug
    (default, MaxTime 1 h) and batch, one node of 2 CPUs and 22900 MB, DefMemPerCPU=1024."""
    common = dict(nodes=["vm"], node_cpus=2, node_memory_mb=22900, def_mem_per_cpu_mb=1024, memory_defaults_known=True)
    return cluster_state_json(
        ClusterState(
            partitions=[
                PartitionInfo(name="debug", is_default=True, time_limit_minutes=60, **common),
                PartitionInfo(name="batch", time_limit_minutes=1440, **common),
            ],
            nodes=[NodeInfo(name="vm", state="IDLE", cpus=2, memory_mb=22900, partitions=["debug", "batch"])],
        )
    )


class ClusterFactory(factory.django.DjangoModelFactory):
    """A cluster row with the local cluster's configuration as last read; no host key or
    credentials unless a test sets them."""

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
    state = factory.LazyFunction(local_state)


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


class SweepFactory(factory.django.DjangoModelFactory):
    """A grid sweep row on its owner's grant, with no spec, script or trials: for what writes
    or reads its trials directly."""

    class Meta:
        model = Sweep

    grant = factory.SubFactory(ClusterGrantFactory)
    owner = factory.LazyAttribute(lambda s: s.grant.user)
    cluster = factory.LazyAttribute(lambda s: s.grant.cluster)
    name = "s"
    spec_text = ""
    script = ""
    algorithm = "grid"
    max_trial_count = 10
    folder = "/f"
