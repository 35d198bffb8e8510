-- Runs once, when the postgres container first initialises its data directory.
-- The app role needs a password to log in over the network; `tenantd migrate` creates the
-- role if it is missing but never sets a password, so the password is given here.
-- Change it (and TENANTD_DATABASE_URL) for anything but local development.
CREATE ROLE tenantd_app LOGIN PASSWORD 'tenantd_app';
