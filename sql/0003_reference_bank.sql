-- The reference bank: a small card-services core the connector can run against without a real bank.
-- banking/pg_bank.py is its adapter; a production deployment points an HTTP adapter at the real bank.
-- Idempotent: every statement may run again on an up-to-date database.
--
-- Model: a customer holds one credit-card account; several cards (renewals, replacements) draw on it.
-- Card numbers: this bank stores NO full card number. A real issuer keeps PANs in a PCI-scoped vault and
-- hands other systems a token; so do we (pan_token) plus the last four digits, which is all a voice
-- line ever needs. A hash would not do: a 16-digit PAN with a known issuer prefix and a Luhn digit
-- leaves about 10^9 candidates, which a laptop hashes in seconds.

CREATE SCHEMA IF NOT EXISTS bank;

CREATE TABLE IF NOT EXISTS bank.customers (
    customer_id        text PRIMARY KEY CHECK (customer_id ~ '^C[0-9]{6}$'),
    given_name         text NOT NULL,
    family_name        text NOT NULL,
    date_of_birth      date NOT NULL CHECK (date_of_birth > DATE '1900-01-01'),
    postal_code        text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    -- Set after repeated failed voice verifications; voice self-service refuses this customer until then.
    voice_locked_until timestamptz
);

CREATE TABLE IF NOT EXISTS bank.phones (
    customer_id text NOT NULL REFERENCES bank.customers (customer_id) ON DELETE CASCADE,
    e164        text NOT NULL CHECK (e164 ~ '^\+[1-9][0-9]{6,14}$'),
    kind        text NOT NULL CHECK (kind IN ('mobile', 'home', 'work')),
    PRIMARY KEY (customer_id, e164)
);
-- Not unique: a household may share one phone.
CREATE INDEX IF NOT EXISTS phones_e164_idx ON bank.phones (e164);

CREATE TABLE IF NOT EXISTS bank.accounts (
    account_id       text PRIMARY KEY CHECK (account_id ~ '^A[0-9]{7}$'),
    customer_id      text NOT NULL UNIQUE REFERENCES bank.customers (customer_id) ON DELETE CASCADE,
    currency         char(3) NOT NULL DEFAULT 'USD',
    balance          numeric(12, 2) NOT NULL,
    credit_limit     numeric(12, 2) NOT NULL CHECK (credit_limit >= 0),
    available_credit numeric(12, 2) NOT NULL CHECK (available_credit >= 0),
    CHECK (available_credit <= credit_limit)
);

CREATE TABLE IF NOT EXISTS bank.cards (
    card_id     text PRIMARY KEY CHECK (card_id ~ '^K[0-9]{7}$'),
    customer_id text NOT NULL REFERENCES bank.customers (customer_id) ON DELETE CASCADE,
    account_id  text NOT NULL REFERENCES bank.accounts (account_id) ON DELETE CASCADE,
    pan_token   text NOT NULL UNIQUE,
    last4       char(4) NOT NULL CHECK (last4 ~ '^[0-9]{4}$'),
    status      text NOT NULL CHECK (status IN ('inactive', 'active', 'locked', 'blocked')),
    expires_on  date NOT NULL,
    issued_on   date NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS cards_customer_idx ON bank.cards (customer_id);

CREATE TABLE IF NOT EXISTS bank.card_shipments (
    shipment_id     text PRIMARY KEY CHECK (shipment_id ~ '^S[0-9]{7}$'),
    card_id         text NOT NULL REFERENCES bank.cards (card_id) ON DELETE CASCADE,
    status          text NOT NULL
                    CHECK (status IN ('preparing', 'shipped', 'in_transit', 'out_for_delivery', 'delivered', 'returned')),
    carrier         text,
    tracking_number text,
    shipped_on      date,
    expected_on     date,
    delivered_on    date,
    undeliverable   boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (status = 'preparing' OR carrier IS NOT NULL),
    CHECK (status <> 'delivered' OR delivered_on IS NOT NULL),
    CHECK (NOT undeliverable OR status = 'returned')
);
CREATE INDEX IF NOT EXISTS card_shipments_card_idx ON bank.card_shipments (card_id, created_at DESC);

CREATE TABLE IF NOT EXISTS bank.transactions (
    transaction_id text PRIMARY KEY CHECK (transaction_id ~ '^T[0-9]{8}$'),
    account_id     text NOT NULL REFERENCES bank.accounts (account_id) ON DELETE CASCADE,
    card_id        text REFERENCES bank.cards (card_id) ON DELETE SET NULL,
    posted_at      timestamptz NOT NULL,
    amount         numeric(12, 2) NOT NULL,
    merchant       text NOT NULL,
    pending        boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS transactions_account_idx ON bank.transactions (account_id, posted_at DESC);

-- One-time codes sent by text message: only a salted SHA-256 of the code is kept.
CREATE TABLE IF NOT EXISTS bank.otp_challenges (
    challenge_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_id  text NOT NULL REFERENCES bank.customers (customer_id) ON DELETE CASCADE,
    salt         bytea NOT NULL,
    code_sha256  bytea NOT NULL,
    expires_at   timestamptz NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    used         boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS otp_challenges_open_idx ON bank.otp_challenges (customer_id, created_at DESC) WHERE NOT used;
