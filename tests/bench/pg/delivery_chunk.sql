-- One dispatcher chunk of 256 deliveries, as the hot path writes it: the events
-- (one autocommit statement), then deliveries with their attempts (one statement).
-- Driven by run.sh through pgbench.
\set n 256
SELECT nextval('mb_seq') AS base \gset
WITH i AS (INSERT INTO events (id, user_id, event_type, payload, idempotency_key, ordering_key, accepted_at)
  SELECT md5(:base || '-' || g)::uuid, 'u1', 'bench.event', ('{"seq":' || g || ',"sentAtNanos":1764495000000000000,"pad":"' || repeat('x', 150) || '"}')::text::json, 'k' || :base || '-' || g, NULL, now() FROM generate_series(1, :n) g
  ON CONFLICT (id) DO NOTHING RETURNING id) SELECT count(*) AS c FROM i \gset
BEGIN;
WITH ev AS (SELECT md5(:base || '-' || g)::uuid AS event_id, gen_random_uuid() AS did FROM generate_series(1, :n) g)
, ins AS (
  INSERT INTO webhook_deliveries (id, webhook_id, event_id, user_id, event_type, ordering_key, ordering_seq, status, attempts, max_retries, next_attempt_at, last_status_code, last_error)
  SELECT did, '00000000-0000-0000-0000-000000000001', event_id, 'u1', 'bench.event', NULL, NULL, 'succeeded', 1, 5, NULL, 200, NULL FROM ev
  ON CONFLICT DO NOTHING RETURNING id)
, att AS (
  INSERT INTO webhook_delivery_attempts (delivery_id, attempt_number, request_headers, response_status, response_body, latency_ms, error_kind, error_message, started_at)
  SELECT id, 1, '{"content-type":"application/json","user-agent":"Portico-Webhooks/0.1","webhook-id":"01234567-89ab-cdef-0123-456789abcdef","webhook-timestamp":"1764495000","webhook-signature":"v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="}'::text::jsonb, 200, '', 1, NULL, NULL, now() FROM ins)
SELECT count(*) FROM ins \gset
COMMIT;
