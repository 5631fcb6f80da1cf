-- Read models. Never edit a migration once it has landed; add a new one.
--
-- Each projection owns one Postgres schema: the live ones are rm_orders,
-- rm_inventory, rm_catalog and rm_sales. A rebuild creates a fresh schema
-- (e.g. rm_orders_rebuild) with the same tables, fills it, and swaps it in by
-- renaming schemas. So the DDL lives in one function that takes the schema
-- name, used here for the live schemas and by rebuilds for fresh ones.
--
-- Every schema has `stream_positions`: the last applied version (and its
-- global position) of every stream the projection consumed. Projectors
-- update it in the same transaction as the read-model rows, which makes
-- applying an event idempotent by (stream id, version).

CREATE FUNCTION fulcrum_create_read_model(projection text, schema_name text)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF schema_name IS NULL OR schema_name !~ '^[a-z_][a-z0-9_]*$' OR length(schema_name) > 63 THEN
        RAISE EXCEPTION 'invalid read-model schema name %', schema_name
            USING ERRCODE = 'invalid_schema_name';
    END IF;
    IF projection IS NULL OR projection NOT IN ('orders', 'inventory', 'catalog', 'sales') THEN
        RAISE EXCEPTION 'unknown projection %', projection
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', schema_name);
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I.stream_positions (
             stream_id        text   PRIMARY KEY,
             version          bigint NOT NULL CHECK (version >= 1),
             global_position  bigint NOT NULL
         )', schema_name);
    EXECUTE format(
        'CREATE INDEX IF NOT EXISTS stream_positions_global_position
             ON %I.stream_positions (global_position)', schema_name);

    CASE projection
    WHEN 'orders' THEN
        -- One row per order; `seq` (the global position of OrderPlaced) pages
        -- lists newest first.
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I.orders (
                 order_id       uuid        PRIMARY KEY,
                 customer_id    text        NOT NULL,
                 status         text        NOT NULL
                     CHECK (status IN (''placed'', ''confirmed'', ''shipped'', ''delivered'', ''cancelled'')),
                 lines          jsonb       NOT NULL,
                 total          bigint      NOT NULL,
                 currency       text        NOT NULL,
                 cancel_reason  text,
                 version        bigint      NOT NULL,
                 placed_at      timestamptz NOT NULL,
                 updated_at     timestamptz NOT NULL,
                 seq            bigint      NOT NULL UNIQUE
             )', schema_name);
        EXECUTE format(
            'CREATE INDEX IF NOT EXISTS orders_customer_seq ON %I.orders (customer_id, seq)',
            schema_name);
        EXECUTE format(
            'CREATE INDEX IF NOT EXISTS orders_status_seq ON %I.orders (status, seq)',
            schema_name);
    WHEN 'inventory' THEN
        -- Available stock is on_hand - reserved.
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I.inventory (
                 sku       text   PRIMARY KEY,
                 on_hand   bigint NOT NULL,
                 reserved  bigint NOT NULL
             )', schema_name);
    WHEN 'catalog' THEN
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I.products (
                 sku         text   PRIMARY KEY,
                 name        text   NOT NULL,
                 unit_price  bigint NOT NULL,
                 currency    text   NOT NULL
             )', schema_name);
    WHEN 'sales' THEN
        -- What each order contributes, so that a cancellation after
        -- confirmation can take it back from the day it was counted on.
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I.sales_orders (
                 order_id       uuid    PRIMARY KEY,
                 total          bigint  NOT NULL,
                 currency       text    NOT NULL,
                 confirmed_day  date,
                 counted        boolean NOT NULL
             )', schema_name);
        -- Confirmed orders per UTC day (of OrderConfirmed) and currency.
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I.sales_days (
                 day       date   NOT NULL,
                 currency  text   NOT NULL,
                 orders    bigint NOT NULL,
                 revenue   bigint NOT NULL,
                 PRIMARY KEY (day, currency)
             )', schema_name);
    END CASE;
END;
$$;

SELECT fulcrum_create_read_model('orders', 'rm_orders');
SELECT fulcrum_create_read_model('inventory', 'rm_inventory');
SELECT fulcrum_create_read_model('catalog', 'rm_catalog');
SELECT fulcrum_create_read_model('sales', 'rm_sales');
