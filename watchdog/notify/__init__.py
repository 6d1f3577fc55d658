"""Notifications: what happened, rendered per channel, delivered from a durable outbox.

Where to look (one concept per module):
- `notice`: the facts the recovery core and the service hand over (`Notice`, `EventKind`);
- `settings`: the `notify:` config section;
- `render`: notices into Slack mrkdwn, Telegram HTML or plain text, within each service's limits;
- `channel`: the channel interface (`Channel`, `Message`, `SendResult`, `Outcome`, `Traits`);
- `slack`, `telegram`, `console`: one channel each; `transport` and `redact` are their shared edge;
- `plan` (pure: expire, wait, group), `pacing` (rate limits), `outbox` (the durable pipeline);
- `build`: channels from settings; `notify_test`: the `notify-test` command.

Entry points for the rest of the watchdog: `Outbox(journal, settings).add(notice)`,
`Outbox.deliver_due(now)` from the service's delivery job, `Outbox.stats()` for /metrics,
`notify_test(settings)` for the CLI.
"""
