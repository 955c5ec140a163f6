/* The schema, as an ordered list of migrations. See store_schema.h for the
 * rules a migration body follows and docs/store.md for what each table is for.
 *
 * Conventions: Discord ids (snowflakes) are text holding 1-20 digits, checked
 * by the snowflake domain, because they overflow neither bigint nor JSON
 * numbers when kept as text and are compared only for equality. Every time is
 * timestamptz. A missing guild (direct messages) is NULL, except in
 * usage_daily where guild_id is part of the key and '' stands for "no guild". */
#include "io/store_schema.h"

#define SNOWFLAKE_RE "'^[0-9]{1,20}$'"

static const char m1_initial[] =
    "CREATE DOMAIN snowflake AS text CHECK (VALUE ~ " SNOWFLAKE_RE ");\n"

    /* One conversation per scope: a user in a channel, or a user in a thread.
     * updated_at moves on every message so idle ones can be expired. */
    "CREATE TABLE conversations (\n"
    "  id bigserial PRIMARY KEY,\n"
    "  scope_key text NOT NULL UNIQUE\n"
    "    CHECK (scope_key ~ '^[a-z]+:[0-9]{1,20}(:[a-z]+:[0-9]{1,20})*$'\n"
    "           AND length(scope_key) <= 200),\n"
    "  guild_id snowflake,\n"
    "  channel_id snowflake NOT NULL,\n"
    "  thread_id snowflake,\n"
    "  user_id snowflake NOT NULL,\n"
    "  created_at timestamptz NOT NULL DEFAULT now(),\n"
    "  updated_at timestamptz NOT NULL DEFAULT now(),\n"
    "  CHECK (updated_at >= created_at)\n"
    ");\n"
    "CREATE INDEX conversations_updated_at_idx ON conversations (updated_at);\n"
    "CREATE INDEX conversations_user_idx ON conversations (user_id);\n"

    /* The history replayed to the model. (conversation_id, id) reads one
     * conversation in order and finds its newest rows for trimming. */
    "CREATE TABLE messages (\n"
    "  id bigserial PRIMARY KEY,\n"
    "  conversation_id bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,\n"
    "  role text NOT NULL CHECK (role IN ('system', 'user', 'assistant')),\n"
    "  content text NOT NULL,\n"
    "  token_estimate integer NOT NULL DEFAULT 0 CHECK (token_estimate >= 0),\n"
    "  created_at timestamptz NOT NULL DEFAULT now()\n"
    ");\n"
    "CREATE INDEX messages_conversation_idx ON messages (conversation_id, id);\n"

    /* Per-day counters, bumped with INSERT .. ON CONFLICT (primary key) DO
     * UPDATE. Quota checks read (day, user_id); reports read by guild. */
    "CREATE TABLE usage_daily (\n"
    "  day date NOT NULL,\n"
    "  user_id snowflake NOT NULL,\n"
    "  guild_id text NOT NULL DEFAULT '' CHECK (guild_id = '' OR guild_id ~ " SNOWFLAKE_RE "),\n"
    "  kind text NOT NULL CHECK (kind IN ('chat', 'image', 'video')),\n"
    "  model text NOT NULL CHECK (model <> '' AND length(model) <= 200),\n"
    "  requests bigint NOT NULL DEFAULT 0 CHECK (requests >= 0),\n"
    "  prompt_tokens bigint NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),\n"
    "  completion_tokens bigint NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),\n"
    "  units bigint NOT NULL DEFAULT 0 CHECK (units >= 0),\n"
    "  credits_estimate numeric(18, 6) NOT NULL DEFAULT 0 CHECK (credits_estimate >= 0),\n"
    "  updated_at timestamptz NOT NULL DEFAULT now(),\n"
    "  PRIMARY KEY (day, user_id, guild_id, kind, model)\n"
    ");\n"
    "CREATE INDEX usage_daily_guild_idx ON usage_daily (guild_id, day);\n"
    "CREATE INDEX usage_daily_user_idx ON usage_daily (user_id, day);\n"

    /* Long-running generation jobs that must survive a restart. The
     * interaction id is the idempotency key, so a redelivered interaction
     * finds its job instead of paying the provider twice. interaction_token
     * is a credential (valid 15 minutes): never log it, and clear it when the
     * job finishes. finished_at is set exactly when the state is final. */
    "CREATE TABLE jobs (\n"
    "  id bigserial PRIMARY KEY,\n"
    "  idempotency_key text NOT NULL UNIQUE CHECK (idempotency_key <> ''),\n"
    "  kind text NOT NULL CHECK (kind IN ('chat', 'image', 'video')),\n"
    "  state text NOT NULL DEFAULT 'submitting'\n"
    "    CHECK (state IN ('submitting', 'submitted', 'polling', 'done', 'failed')),\n"
    "  owner text,\n"
    "  user_id snowflake NOT NULL,\n"
    "  guild_id snowflake,\n"
    "  channel_id snowflake NOT NULL,\n"
    "  application_id snowflake NOT NULL,\n"
    "  interaction_token text,\n"
    "  token_expires_at timestamptz,\n"
    "  provider text NOT NULL CHECK (provider <> ''),\n"
    "  provider_task_id text,\n"
    "  request jsonb NOT NULL DEFAULT '{}',\n"
    "  result jsonb,\n"
    "  error text,\n"
    "  attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),\n"
    "  created_at timestamptz NOT NULL DEFAULT now(),\n"
    "  updated_at timestamptz NOT NULL DEFAULT now(),\n"
    "  finished_at timestamptz,\n"
    "  CHECK ((state IN ('done', 'failed')) = (finished_at IS NOT NULL)),\n"
    "  CHECK (interaction_token IS NULL OR token_expires_at IS NOT NULL)\n"
    ");\n"
    /* Only unfinished jobs are ever scanned (takeover of a dead owner's jobs,
     * polling); a partial index keeps that cheap however many are done. */
    "CREATE INDEX jobs_unfinished_idx ON jobs (owner, updated_at)\n"
    "  WHERE state NOT IN ('done', 'failed');\n"
    "CREATE INDEX jobs_provider_task_idx ON jobs (provider, provider_task_id)\n"
    "  WHERE provider_task_id IS NOT NULL;\n"
    "CREATE INDEX jobs_user_idx ON jobs (user_id, created_at);\n"

    /* Who did what, for moderators and incident review. Append-only. */
    "CREATE TABLE audit_log (\n"
    "  id bigserial PRIMARY KEY,\n"
    "  ts timestamptz NOT NULL DEFAULT now(),\n"
    "  instance text NOT NULL,\n"
    "  guild_id snowflake,\n"
    "  user_id snowflake,\n"
    "  action text NOT NULL CHECK (action <> ''),\n"
    "  detail jsonb NOT NULL DEFAULT '{}'\n"
    ");\n"
    "CREATE INDEX audit_log_ts_idx ON audit_log (ts);\n"
    "CREATE INDEX audit_log_guild_ts_idx ON audit_log (guild_id, ts) WHERE guild_id IS NOT NULL;\n";

/* A turn may be stored again after a connection loss left its first write
 * unconfirmed: turn_key (the interaction or message it answered) makes the
 * second write find the first instead of adding the pair twice. */
static const char m2_turn_key[] =
    "ALTER TABLE messages ADD COLUMN turn_key text\n"
    "  CHECK (turn_key IS NULL OR (turn_key <> '' AND length(turn_key) <= 100));\n"
    "CREATE UNIQUE INDEX messages_turn_idx ON messages (conversation_id, turn_key, role)\n"
    "  WHERE turn_key IS NOT NULL;\n";

const struct store_migration store__migrations[] = {
    {1, "initial schema", m1_initial},
    {2, "messages.turn_key", m2_turn_key},
};

const int store__nmigrations = (int)(sizeof(store__migrations) / sizeof(store__migrations[0]));
