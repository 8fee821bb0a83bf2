-- Every addition or removal of a suppression, in order, so that a consumer (the sync engine)
-- acts on it at once rather than at the person's next profile change. A suppression existing
-- before this migration is not listed: it already acts at the next change or reconcile.
CREATE TABLE suppression_changes (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    ident_key BLOB    NOT NULL,
    scope     TEXT    NOT NULL
);
