"""How pipelines start by themselves: a forge's push webhook, polling a repository that cannot
send one, and cron schedules in a time zone. Its own Django app (label ``pipeline_triggers``)
with its own tables, beside the pipelines app it starts runs of."""
