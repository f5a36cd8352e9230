//! Orders and their line items (`orders`, `order_items`): created by the
//! batch-processor from a chunk of a bulk-order batch, read back by the gateway.
//!
//! A chunk's orders and all their items are inserted with one statement (two `unnest`
//! inserts chained in a CTE). The unique `(user_id, client_order_ref)` index decides
//! which orders already exist (`ON CONFLICT DO NOTHING RETURNING`), so a chunk of new
//! orders needs no lookup; only the references that conflicted are looked up
//! afterwards ([`find_by_refs`]).

use chrono::{DateTime, Utc};
use portico_domain::ids::{BatchId, IntegrationId, OrderId};
use sqlx::PgExecutor;
use uuid::Uuid;

/// Who new orders belong to: the same for every order of a batch.
#[derive(Debug, Clone, Copy)]
pub struct OrderOwner<'a> {
    /// The owner; a reference is unique per owner.
    pub user_id: &'a str,
    /// The batch that creates them.
    pub batch_id: BatchId,
    /// The integration that submitted the batch.
    pub integration_id: Option<IntegrationId>,
}

/// One order to create.
#[derive(Debug, Clone)]
pub struct NewOrder<'a> {
    /// Its new id.
    pub id: OrderId,
    /// The client's reference.
    pub client_order_ref: &'a str,
    /// ISO 4217 code.
    pub currency: &'a str,
    /// The customer, as JSON text.
    pub customer: String,
    /// The shipping address, as JSON text.
    pub shipping_address: String,
    /// Sum of the lines, in minor units.
    pub total_minor: i64,
    /// The client's free-form object, as JSON text.
    pub metadata: Option<&'a str>,
}

/// One line item of an order to create.
#[derive(Debug, Clone, Copy)]
pub struct NewLineItem<'a> {
    /// 1-based position in its order.
    pub line_number: i32,
    /// Stock-keeping unit.
    pub sku: &'a str,
    /// Units ordered.
    pub quantity: i32,
    /// Price of one unit, in minor units.
    pub unit_price_minor: i64,
}

/// Orders with their items to create in one statement, gathered column by column.
#[derive(Debug, Default)]
pub struct NewOrders<'a> {
    ids: Vec<Uuid>,
    refs: Vec<&'a str>,
    currencies: Vec<&'a str>,
    customers: Vec<String>,
    addresses: Vec<String>,
    totals: Vec<i64>,
    metadata: Vec<Option<&'a str>>,
    item_orders: Vec<Uuid>,
    item_lines: Vec<i32>,
    item_skus: Vec<&'a str>,
    item_quantities: Vec<i32>,
    item_prices: Vec<i64>,
}

impl<'a> NewOrders<'a> {
    /// Room for `orders` orders with `items` line items in all.
    pub fn with_capacity(orders: usize, items: usize) -> Self {
        Self {
            ids: Vec::with_capacity(orders),
            refs: Vec::with_capacity(orders),
            currencies: Vec::with_capacity(orders),
            customers: Vec::with_capacity(orders),
            addresses: Vec::with_capacity(orders),
            totals: Vec::with_capacity(orders),
            metadata: Vec::with_capacity(orders),
            item_orders: Vec::with_capacity(items),
            item_lines: Vec::with_capacity(items),
            item_skus: Vec::with_capacity(items),
            item_quantities: Vec::with_capacity(items),
            item_prices: Vec::with_capacity(items),
        }
    }

    /// Adds an order and its items.
    pub fn push(&mut self, order: NewOrder<'a>, items: impl IntoIterator<Item = NewLineItem<'a>>) {
        let id = order.id.as_uuid();
        self.ids.push(id);
        self.refs.push(order.client_order_ref);
        self.currencies.push(order.currency);
        self.customers.push(order.customer);
        self.addresses.push(order.shipping_address);
        self.totals.push(order.total_minor);
        self.metadata.push(order.metadata);
        for item in items {
            self.item_orders.push(id);
            self.item_lines.push(item.line_number);
            self.item_skus.push(item.sku);
            self.item_quantities.push(item.quantity);
            self.item_prices.push(item.unit_price_minor);
        }
    }

    /// Orders added so far.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when no order was added.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Inserts the orders and their items in one statement; returns the ids actually
/// inserted. An order whose reference the owner already has (from an earlier batch,
/// or a concurrent one) is skipped with its items, not an error.
pub async fn insert(
    executor: impl PgExecutor<'_>,
    owner: &OrderOwner<'_>,
    orders: &NewOrders<'_>,
) -> Result<Vec<OrderId>, sqlx::Error> {
    let inserted = sqlx::query_scalar!(
        r#"WITH new_orders AS (
             INSERT INTO orders (id, user_id, batch_id, integration_id, client_order_ref, currency,
                                 customer, shipping_address, total_minor, metadata)
             SELECT t.id, $1, $2, $3, t.ref, t.currency, t.customer::jsonb, t.address::jsonb,
                    t.total, t.metadata::jsonb
             FROM unnest($4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[], $9::int8[], $10::text[])
                 AS t(id, ref, currency, customer, address, total, metadata)
             ON CONFLICT (user_id, client_order_ref) DO NOTHING
             RETURNING id
         ), new_items AS (
             INSERT INTO order_items (order_id, line_number, sku, quantity, unit_price_minor)
             SELECT i.order_id, i.line_number, i.sku, i.quantity, i.price
             FROM unnest($11::uuid[], $12::int4[], $13::text[], $14::int4[], $15::int8[])
                 AS i(order_id, line_number, sku, quantity, price)
             WHERE i.order_id IN (SELECT id FROM new_orders)
         )
         SELECT id AS "id!" FROM new_orders"#,
        owner.user_id,
        owner.batch_id.as_uuid(),
        owner.integration_id.map(IntegrationId::as_uuid),
        &orders.ids,
        &orders.refs as &[&str],
        &orders.currencies as &[&str],
        &orders.customers,
        &orders.addresses,
        &orders.totals,
        &orders.metadata as &[Option<&str>],
        &orders.item_orders,
        &orders.item_lines,
        &orders.item_skus as &[&str],
        &orders.item_quantities,
        &orders.item_prices
    )
    .fetch_all(executor)
    .await?;
    Ok(inserted.into_iter().map(OrderId).collect())
}

/// The ids of `user_id`'s orders with these references (references without an order
/// are left out): one index probe per reference (a scalar subquery runs per row, so a
/// stale row estimate can never turn it into a scan of all the owner's orders).
pub async fn find_by_refs(
    executor: impl PgExecutor<'_>,
    user_id: &str,
    refs: &[&str],
) -> Result<Vec<(String, OrderId)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT r.ref AS "client_order_ref!",
                  (SELECT o.id FROM orders o WHERE o.user_id = $1 AND o.client_order_ref = r.ref) AS "id?"
           FROM unnest($2::text[]) AS r(ref)"#,
        user_id,
        refs as &[&str]
    )
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.id.map(|id| (r.client_order_ref, OrderId(id))))
        .collect())
}

/// A stored order with its line items.
#[derive(Debug, Clone)]
pub struct StoredOrder {
    /// The order id.
    pub id: OrderId,
    /// The batch that created it (until the batch's retention ends).
    pub batch_id: Option<BatchId>,
    /// The integration whose batch created it.
    pub integration_id: Option<IntegrationId>,
    /// The client's reference.
    pub client_order_ref: String,
    /// ISO 4217 code.
    pub currency: String,
    /// `{"email","name","phone"?}`.
    pub customer: serde_json::Value,
    /// `{"line1","line2"?,"city","region"?,"postalCode","country"}`.
    pub shipping_address: serde_json::Value,
    /// Sum of the lines, in minor units.
    pub total_minor: i64,
    /// The client's free-form object.
    pub metadata: Option<serde_json::Value>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// The lines, in order ([`line_items`]; empty from [`get_for_user`]).
    pub line_items: Vec<StoredLineItem>,
}

/// One line of a stored order.
#[derive(Debug, Clone)]
pub struct StoredLineItem {
    /// Stock-keeping unit.
    pub sku: String,
    /// Units ordered.
    pub quantity: i32,
    /// Price of one unit, in minor units.
    pub unit_price_minor: i64,
}

/// One order of `user_id` (another user's order reads as none), without its items.
pub async fn get_for_user(
    executor: impl PgExecutor<'_>,
    user_id: &str,
    id: OrderId,
) -> Result<Option<StoredOrder>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT id, batch_id, integration_id, client_order_ref, currency, customer,
                shipping_address, total_minor, metadata, created_at
         FROM orders WHERE id = $1 AND user_id = $2",
        id.as_uuid(),
        user_id
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|r| StoredOrder {
        id: OrderId(r.id),
        batch_id: r.batch_id.map(BatchId),
        integration_id: r.integration_id.map(IntegrationId),
        client_order_ref: r.client_order_ref,
        currency: r.currency,
        customer: r.customer,
        shipping_address: r.shipping_address,
        total_minor: r.total_minor,
        metadata: r.metadata,
        created_at: r.created_at,
        line_items: Vec::new(),
    }))
}

/// The line items of an order, in order.
pub async fn line_items(
    executor: impl PgExecutor<'_>,
    order_id: OrderId,
) -> Result<Vec<StoredLineItem>, sqlx::Error> {
    sqlx::query_as!(
        StoredLineItem,
        "SELECT sku, quantity, unit_price_minor FROM order_items
         WHERE order_id = $1 ORDER BY line_number",
        order_id.as_uuid()
    )
    .fetch_all(executor)
    .await
}
