"""Demo environments, and the example model live in staging so "try it" works at once."""

import time

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from apps.accounts.models import Team, User
from apps.audit.services import audit_record
from apps.registry.models import RegisteredModel
from apps.serving import services
from apps.serving.models import Deployment, Environment

MODEL_NAME = "digits-classifier"


class Command(BaseCommand):
    help = "Create the demo environments (staging, production) and serve the example model in staging."

    def say(self, text: str) -> None:
        self.stdout.write(f"    {text}")
        self.stdout.flush()

    def handle(self, *args, **options):
        admin = User.objects.get(username="admin")
        vision = Team.objects.get(name="vision")
        for name, approvals, description in [
            ("staging", 0, "Try models out; no approval needed"),
            ("production", 1, "Serves real traffic; an approver of the model's team must approve"),
        ]:
            with transaction.atomic():
                env, created = Environment.objects.get_or_create(
                    name=name,
                    defaults={
                        "required_approvals": approvals,
                        "approver_role": "approver",
                        "approver_team": vision,
                        "backend": "local",
                        "description": description,
                    },
                )
                if created:
                    audit_record(
                        action="environment.created",
                        subject=env,
                        actor=admin,
                        after={"required_approvals": approvals, "backend": "local"},
                    )
        counts = services.serving_reconcile()
        if counts["restarted"] or counts["converged"]:
            self.say(f"model servers reconciled: {counts}")

        model = RegisteredModel.objects.filter(name=MODEL_NAME).first()
        if model is None:
            self.say(f"no {MODEL_NAME} registered yet; nothing to serve")
            return
        staging = Environment.objects.get(name="staging")
        version = model.versions.order_by("-number").first()
        deployment = (
            Deployment.objects.filter(environment=staging, model_version=version)
            .exclude(status__in=[Deployment.Status.REJECTED, Deployment.Status.ROLLED_BACK])
            .order_by("-created_at")
            .first()
        )
        if deployment is None:
            deployment = services.deployment_request(
                user=User.objects.get(username="scientist"),
                model_version=version,
                environment=staging,
                reason="Demo: try the example model",
            )
        deadline = time.monotonic() + 240
        while True:
            deployment.refresh_from_db()
            if deployment.status == Deployment.Status.LIVE:
                break
            if deployment.status in (Deployment.Status.APPROVED, Deployment.Status.FAILED):
                self.say(f"starting the model server for {version} in staging")
                services.deployment_deploy(deployment_id=deployment.pk)
            elif deployment.status == Deployment.Status.DEPLOYING:
                services.serving_reconcile()
            if time.monotonic() > deadline or deployment.status in Deployment.TERMINAL:
                raise CommandError(
                    f"{version} did not go live in staging: {deployment.last_error or deployment.status}"
                )
            time.sleep(1)
        # A server the reconciler just restarted is live on paper before it answers.
        from apps.serving.backends import backend_for

        backend, ready_by = backend_for(staging), time.monotonic() + 180
        while not backend.status(deployment.backend_name, staging.namespace).ready:
            if time.monotonic() > ready_by:
                raise CommandError(f"the model server for {version} does not answer; see {deployment.backend_name}.log")
            time.sleep(1)
        self.say(f"{version} is live in staging at {deployment.url}; production waits for approver")
