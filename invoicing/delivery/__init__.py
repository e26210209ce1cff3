"""Delivery: getting an invoice email to its recipient and learning what happened.

Invoicing decides *what* to send and to whom (`invoicing.sending`); this package owns the
rest of the way:

- `outbox`: one `Delivery` row per recipient, prepared and queued (the transactional outbox).
- `sender`: the group sender (claim a group, send it over one SMTP connection, record it),
  with `pipelining` (SMTP PIPELINING for the next message) and `refusals` (what the server
  refused at send time, and the soft retries of a 4.x.x refusal).
- `verp`: the per-delivery return path that lets a bounce name its delivery.
- `events`: every delivery outcome recorded as a `DeliveryEvent`, from any source.
- `webhooks` (the ESP's tracking webhooks, stored fast) and `webhook_events` (processing
  them into events, in batches, waiting for deliveries they arrive before).
- `dsn_mailbox` (reading bounce reports from a mailbox) and `bounces` (parsing a DSN,
  classifying it by rules).
- `suppression`: why an address is blocked, and lifting that.
- `tasks`: the Celery tasks for the above.

Models live in `invoicing.delivery.models` (app label ``invoicing``; the tables did not move).
"""
