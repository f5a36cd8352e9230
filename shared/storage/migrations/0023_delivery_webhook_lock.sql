-- Deliveries lose their foreign key to webhooks; the dispatcher's insert takes its
-- place (issue 16, PostgreSQL's share of a delivery).
--
-- A foreign key is checked row by row: every delivery inserted ran
-- `SELECT 1 FROM webhooks WHERE id = $1 FOR KEY SHARE` through SPI after its
-- statement, about 7 % of PostgreSQL's CPU on the dispatcher's hot path (perf, 200,000
-- deliveries to one endpoint), for the same webhook row 512 times per chunk. The one
-- statement that inserts deliveries (portico_storage::deliveries::
-- insert_deliveries_with_rollups) now locks each distinct webhook of its chunk once,
-- `FOR KEY SHARE`, and inserts only the rows whose webhook it locked: the same
-- guarantee (a webhook deleted before commits no delivery; a delete waits for the
-- insert to commit and then removes what it wrote), and a chunk with a webhook deleted
-- under it records the rest instead of failing whole.
--
-- `ON DELETE CASCADE` becomes a row trigger on webhooks, as the attempts' cascade did
-- in 0022; deleting deliveries fires that one in turn.
--
-- Rolling upgrade: a dispatcher of the previous release inserts without the lock, so
-- while both run, a webhook deleted in the same instant as one of its deliveries is
-- recorded can leave that delivery behind. Nothing lists it (its webhook is gone) and
-- retention drops it with its day.
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_webhook_id_fkey;

CREATE FUNCTION portico_webhook_deliveries_cascade() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    DELETE FROM webhook_deliveries WHERE webhook_id = OLD.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER webhooks_deliveries_cascade
    AFTER DELETE ON webhooks
    FOR EACH ROW EXECUTE FUNCTION portico_webhook_deliveries_cascade();
