-- When each field of a project last changed: a JSON object of field name to seq
-- ({"progress": 42, ...}), written with the row by every push. A stale edit (one whose
-- base_seq predates the change of a field it sends) is then a conflict, not an
-- overwrite (docs/SYNC.md, "Conflicts"). Rows written before this column existed have
-- '{}': each of their fields counts as changed at the row's own seq, the latest it can
-- have been.
ALTER TABLE projects ADD COLUMN field_seqs TEXT NOT NULL DEFAULT '{}';
