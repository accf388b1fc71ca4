-- A writable profile is held by at most one running task at a time.
ALTER TABLE profiles ADD COLUMN locked_by TEXT;
