from . import reconcile, rollout


def deployment_deploy(deployment_id: int):
    rollout.deployment_deploy(deployment_id=deployment_id)


def serving_reconcile():
    return reconcile.serving_reconcile()
