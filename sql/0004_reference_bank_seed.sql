-- Seed of the reference bank: 60 synthetic customers, deterministic, safe to run again (ON CONFLICT DO NOTHING).
-- All phone numbers are in the 555-01XX range reserved for fiction; names and dates are invented.
--
-- Customers C000001..C000010 are hand-written edge cases that tests rely on:
--   C000001 Alice   a renewal card (ending 7315) in transit with UPS, the old card (1881) still active
--   C000002 Bruno   several cards: active 5100, temporarily locked 6011, delivered-but-inactive 3782
--   C000003 Chloe   a blocked (lost) card 0005 and its replacement 8844 shipped by USPS
--   C000004 Dmitri  an undeliverable shipment returned to the bank (card 2718)
--   C000005 Erin    no phone on file
--   C000006 Farid   shares the home phone +12025550106 with C000007 Grace (different dates of birth)
--   C000008 Hiro    a new card (5555) still being prepared, no carrier yet
--   C000009 Ines    twins sharing the home phone +12025550109 with C000010 Joana: same date of birth,
--   C000010 Joana   told apart only by their cards (1212, 3434)
-- C000011..C000060 are generated alike: one active delivered card, a mobile, an account, five transactions.

INSERT INTO bank.customers (customer_id, given_name, family_name, date_of_birth, postal_code) VALUES
    ('C000001', 'Alice', 'Martin', DATE '1980-03-05', '20001'),
    ('C000002', 'Bruno', 'Keller', DATE '1975-07-14', '20002'),
    ('C000003', 'Chloe', 'Dubois', DATE '1991-12-24', '20003'),
    ('C000004', 'Dmitri', 'Ivanov', DATE '1968-01-30', '20004'),
    ('C000005', 'Erin', 'O''Neill', DATE '2001-09-09', '20005'),
    ('C000006', 'Farid', 'Haddad', DATE '1983-05-17', '20006'),
    ('C000007', 'Grace', 'Haddad', DATE '1985-10-02', '20006'),
    ('C000008', 'Hiro', 'Tanaka', DATE '1990-02-28', '20008'),
    ('C000009', 'Ines', 'Costa', DATE '1995-06-15', '20009'),
    ('C000010', 'Joana', 'Costa', DATE '1995-06-15', '20009')
ON CONFLICT (customer_id) DO NOTHING;

INSERT INTO bank.customers (customer_id, given_name, family_name, date_of_birth, postal_code)
SELECT 'C' || lpad(i::text, 6, '0'),
       (ARRAY['Liam', 'Olivia', 'Noah', 'Emma', 'Oliver', 'Ava', 'Elijah', 'Sophia', 'Mateo', 'Isabella',
              'Lucas', 'Mia', 'Levi', 'Amelia', 'Ezra', 'Harper', 'Asher', 'Evelyn', 'Leo', 'Luna'])[1 + i % 20],
       (ARRAY['Smith', 'Johnson', 'Williams', 'Brown', 'Jones', 'Garcia', 'Miller', 'Davis', 'Rodriguez', 'Martinez',
              'Hernandez', 'Lopez', 'Gonzalez', 'Wilson', 'Anderson', 'Thomas', 'Taylor', 'Moore', 'Jackson', 'Lee'])
           [1 + (i * 7) % 20],
       DATE '1950-01-01' + (i * 3571) % 18250,
       lpad((10000 + i * 37)::text, 5, '0')
FROM generate_series(11, 60) AS i
ON CONFLICT (customer_id) DO NOTHING;

INSERT INTO bank.phones (customer_id, e164, kind) VALUES
    ('C000001', '+12025550101', 'mobile'),
    ('C000001', '+12025550193', 'work'),
    ('C000002', '+12025550102', 'mobile'),
    ('C000003', '+12025550103', 'mobile'),
    ('C000004', '+12025550104', 'mobile'),
    ('C000006', '+12025550106', 'home'),
    ('C000007', '+12025550106', 'home'),
    ('C000007', '+12025550107', 'mobile'),
    ('C000008', '+12025550108', 'mobile'),
    ('C000009', '+12025550109', 'home'),
    ('C000009', '+12025550191', 'mobile'),
    ('C000010', '+12025550109', 'home'),
    ('C000010', '+12025550192', 'mobile')
ON CONFLICT (customer_id, e164) DO NOTHING;

INSERT INTO bank.phones (customer_id, e164, kind)
SELECT 'C' || lpad(i::text, 6, '0'), '+1202555' || lpad((100 + i)::text, 4, '0'), 'mobile'
FROM generate_series(11, 60) AS i
ON CONFLICT (customer_id, e164) DO NOTHING;

INSERT INTO bank.accounts (account_id, customer_id, currency, balance, credit_limit, available_credit)
SELECT 'A' || lpad(i::text, 7, '0'),
       'C' || lpad(i::text, 6, '0'),
       'USD',
       ((i * 7919) % 150000) / 100.0,
       2000 + (i % 5) * 1000,
       2000 + (i % 5) * 1000 - ((i * 7919) % 150000) / 100.0
FROM generate_series(1, 60) AS i
ON CONFLICT (account_id) DO NOTHING;

INSERT INTO bank.cards (card_id, customer_id, account_id, pan_token, last4, status, expires_on, issued_on) VALUES
    ('K0000011', 'C000001', 'A0000001', 'tok_' || md5('reference-bank:K0000011'), '1881', 'active', DATE '2026-12-31', DATE '2023-03-20'),
    ('K0000012', 'C000001', 'A0000001', 'tok_' || md5('reference-bank:K0000012'), '7315', 'inactive', DATE '2030-11-30', DATE '2026-11-14'),
    ('K0000021', 'C000002', 'A0000002', 'tok_' || md5('reference-bank:K0000021'), '5100', 'active', DATE '2028-05-31', DATE '2024-05-02'),
    ('K0000022', 'C000002', 'A0000002', 'tok_' || md5('reference-bank:K0000022'), '6011', 'locked', DATE '2027-09-30', DATE '2023-09-11'),
    ('K0000023', 'C000002', 'A0000002', 'tok_' || md5('reference-bank:K0000023'), '3782', 'inactive', DATE '2030-10-31', DATE '2026-11-03'),
    ('K0000031', 'C000003', 'A0000003', 'tok_' || md5('reference-bank:K0000031'), '0005', 'blocked', DATE '2027-02-28', DATE '2023-02-14'),
    ('K0000032', 'C000003', 'A0000003', 'tok_' || md5('reference-bank:K0000032'), '8844', 'inactive', DATE '2030-11-30', DATE '2026-11-17'),
    ('K0000041', 'C000004', 'A0000004', 'tok_' || md5('reference-bank:K0000041'), '2718', 'inactive', DATE '2030-10-31', DATE '2026-10-16'),
    ('K0000051', 'C000005', 'A0000005', 'tok_' || md5('reference-bank:K0000051'), '3141', 'active', DATE '2028-01-31', DATE '2024-01-08'),
    ('K0000061', 'C000006', 'A0000006', 'tok_' || md5('reference-bank:K0000061'), '6161', 'active', DATE '2027-06-30', DATE '2023-06-19'),
    ('K0000071', 'C000007', 'A0000007', 'tok_' || md5('reference-bank:K0000071'), '7171', 'active', DATE '2027-07-31', DATE '2023-07-21'),
    ('K0000081', 'C000008', 'A0000008', 'tok_' || md5('reference-bank:K0000081'), '8282', 'active', DATE '2026-12-31', DATE '2022-12-12'),
    ('K0000082', 'C000008', 'A0000008', 'tok_' || md5('reference-bank:K0000082'), '5555', 'inactive', DATE '2030-12-31', DATE '2026-11-20'),
    ('K0000091', 'C000009', 'A0000009', 'tok_' || md5('reference-bank:K0000091'), '1212', 'active', DATE '2028-06-30', DATE '2024-06-15'),
    ('K0000101', 'C000010', 'A0000010', 'tok_' || md5('reference-bank:K0000101'), '3434', 'active', DATE '2028-06-30', DATE '2024-06-15')
ON CONFLICT (card_id) DO NOTHING;

INSERT INTO bank.cards (card_id, customer_id, account_id, pan_token, last4, status, expires_on, issued_on)
SELECT 'K' || lpad((i * 10 + 1)::text, 7, '0'),
       'C' || lpad(i::text, 6, '0'),
       'A' || lpad(i::text, 7, '0'),
       'tok_' || md5('reference-bank:K' || lpad((i * 10 + 1)::text, 7, '0')),
       lpad(((i * 7919 + 1234) % 10000)::text, 4, '0'),
       'active',
       DATE '2028-01-31' + (i % 24) * 31,
       DATE '2025-01-05' + i
FROM generate_series(11, 60) AS i
ON CONFLICT (card_id) DO NOTHING;

INSERT INTO bank.card_shipments
    (shipment_id, card_id, status, carrier, tracking_number, shipped_on, expected_on, delivered_on, undeliverable)
VALUES
    ('S0000011', 'K0000011', 'delivered', 'USPS', '9400100000000000000011', DATE '2023-03-22', DATE '2023-03-27', DATE '2023-03-27', false),
    ('S0000012', 'K0000012', 'in_transit', 'UPS', '1Z999AA10123456784', DATE '2026-11-18', DATE '2026-11-24', NULL, false),
    ('S0000023', 'K0000023', 'delivered', 'FedEx', '786512345678', DATE '2026-11-05', DATE '2026-11-09', DATE '2026-11-10', false),
    ('S0000032', 'K0000032', 'shipped', 'USPS', '9400111899223344556677', DATE '2026-11-19', DATE '2026-11-28', NULL, false),
    ('S0000041', 'K0000041', 'returned', 'UPS', '1Z999AA10198765433', DATE '2026-10-20', DATE '2026-10-24', NULL, true),
    ('S0000082', 'K0000082', 'preparing', NULL, NULL, NULL, DATE '2026-12-10', NULL, false)
ON CONFLICT (shipment_id) DO NOTHING;

INSERT INTO bank.card_shipments
    (shipment_id, card_id, status, carrier, tracking_number, shipped_on, expected_on, delivered_on, undeliverable)
SELECT 'S' || lpad((i * 10 + 1)::text, 7, '0'),
       'K' || lpad((i * 10 + 1)::text, 7, '0'),
       'delivered',
       (ARRAY['UPS', 'FedEx', 'USPS', 'DHL'])[1 + i % 4],
       'TRK' || lpad((i * 104729)::text, 12, '0'),
       DATE '2025-01-07' + i,
       DATE '2025-01-10' + i,
       DATE '2025-01-10' + i,
       false
FROM generate_series(11, 60) AS i
ON CONFLICT (shipment_id) DO NOTHING;

-- Five transactions per customer on the first card: four charges (the newest still pending) and a payment.
INSERT INTO bank.transactions (transaction_id, account_id, card_id, posted_at, amount, merchant, pending)
SELECT 'T' || lpad((i * 100 + n)::text, 8, '0'),
       'A' || lpad(i::text, 7, '0'),
       'K' || lpad((i * 10 + 1)::text, 7, '0'),
       TIMESTAMPTZ '2026-11-01 15:00:00+00' + make_interval(days => n * 3 + i % 3),
       CASE WHEN n = 1 THEN -150.00 ELSE 1 + ((i * 37 + n * 1009) % 20000) / 100.0 END,
       CASE WHEN n = 1 THEN 'Payment, thank you'
            ELSE (ARRAY['Corner Grocery', 'City Fuel', 'Blue Bottle Coffee', 'Metro Transit', 'Green Pharmacy',
                        'Book Nook', 'Harbor Hardware', 'Sunset Diner', 'Cinema Palace', 'Online Market'])[1 + (i + n) % 10]
       END,
       n = 5
FROM generate_series(1, 60) AS i, generate_series(1, 5) AS n
ON CONFLICT (transaction_id) DO NOTHING;
