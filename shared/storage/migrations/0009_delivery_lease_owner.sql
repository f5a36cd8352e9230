-- Delivery leases name their owner (`<replica>/<claim id>`): the dispatcher renews its
-- short leases while attempts run, fences its writes by owner, and a restarted replica
-- makes its own earlier claims due at once instead of waiting for them to expire.
ALTER TABLE webhook_deliveries ADD COLUMN lease_owner text;
CREATE INDEX webhook_deliveries_lease_owner ON webhook_deliveries (lease_owner)
    WHERE status = 'delivering';
