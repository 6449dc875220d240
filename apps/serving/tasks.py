from . import services


def deployment_deploy(deployment_id: int):
    services.deployment_deploy(deployment_id=deployment_id)


def serving_reconcile():
    return services.serving_reconcile()
