-- The compose lab's one AI node (service ai-node, fixed address in deploy/docker-compose.yml) in
-- dispatcher set 1. Applied after dispatcher.sql; safe to run again.
INSERT INTO dispatcher (setid, destination, description)
SELECT 1, 'sip:172.28.0.20:5070', 'ai-node-1 (compose lab)'
WHERE NOT EXISTS (SELECT 1 FROM dispatcher WHERE setid = 1 AND destination = 'sip:172.28.0.20:5070');
