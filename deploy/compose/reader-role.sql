-- Runs once, when a database container initialises its volume: read-api's login, which may
-- read every table the catalogue role creates (the migrations run later) and nothing else.
CREATE ROLE catalogue_reader LOGIN PASSWORD 'catalogue_reader';
GRANT CONNECT ON DATABASE products TO catalogue_reader;
GRANT USAGE ON SCHEMA public TO catalogue_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE catalogue IN SCHEMA public GRANT SELECT ON TABLES TO catalogue_reader;
