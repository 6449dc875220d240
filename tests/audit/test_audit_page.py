import json

import pytest

from apps.audit.services import audit_record


@pytest.mark.django_db
class TestAuditPage:
    def test_admins_filter_by_actor_action_and_subject(self, client, root, alice, bob):
        audit_record(action="job.submitted", actor=alice, subject_text="resnet run")
        audit_record(action="job.cancelled", actor=bob, subject_text="bert run")
        audit_record(action="token.created", actor=alice, subject_text="cli")
        client.force_login(root)
        page = client.get("/audit/", {"actor": "alice", "action": "job."}).content.decode()
        assert "resnet run" in page and "bert run" not in page and "cli" not in page
        page = client.get("/audit/", {"subject": "bert"}).content.decode()
        assert "bert run" in page and "resnet run" not in page

    def test_a_bad_date_is_explained_not_a_crash(self, client, root):
        response = client.get("/audit/", {"since": "yesterday-ish"})
        assert response.status_code == 302  # not logged in yet
        client.force_login(root)
        response = client.get("/audit/", {"since": "yesterday-ish"})
        assert response.status_code == 200
        assert "is not a date" in response.content.decode()

    def test_exports_contain_the_filtered_events_with_hashes(self, client, root, alice):
        audit_record(action="job.submitted", actor=alice, subject_text="resnet run", after={"gpus": 2})
        audit_record(action="token.created", actor=alice, subject_text="cli")
        client.force_login(root)
        jsonl = b"".join(client.get("/audit/export.jsonl", {"action": "job."}).streaming_content).decode()
        rows = [json.loads(line) for line in jsonl.splitlines()]
        # the login of root is audited too (force_login does not send the signal)
        assert [r["action"] for r in rows] == ["job.submitted"]
        assert rows[0]["after"] == {"gpus": 2} and len(rows[0]["hash"]) == 64
        csv_text = b"".join(client.get("/audit/export.csv").streaming_content).decode()
        assert csv_text.splitlines()[0].startswith("seq,created_at,actor_username,action")
        assert "token.created" in csv_text and "job.submitted" in csv_text
