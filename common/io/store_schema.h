/* store_schema: the versioned SQL migrations compiled into the binary.
 *
 * Internal to the store module. Each entry is the body of one migration: a
 * list of SQL statements, each ending with ';', that store runs inside a
 * plpgsql DO block guarded by a check of schema_migrations, all in the one
 * transaction that holds the migration advisory lock. So a body must not
 * contain transaction control (BEGIN/COMMIT), nor statements that cannot run
 * in a transaction (CREATE INDEX CONCURRENTLY, VACUUM), nor the dollar-quote
 * tag store uses ($store_migrate$). Versions start at 1 and increase by one;
 * a shipped migration is never edited, a change is a new version. */
#ifndef BC_STORE_SCHEMA_H
#define BC_STORE_SCHEMA_H

struct store_migration {
    int version;
    const char *name; /* short description; no quotes */
    const char *sql;
};

extern const struct store_migration store__migrations[];
extern const int store__nmigrations;

/* The key of the transaction-level advisory lock that serialises migrations
 * across instances ("bcschema" in ASCII). */
#define STORE_MIGRATION_LOCK_KEY 7089637109201726817LL

#endif
