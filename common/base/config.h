/* config: every setting of an instance, parsed once into struct config.
 *
 * One table (config.c) holds each setting's name, type, default, limits and
 * help text. Sources, later overriding earlier: the defaults, an env file
 * (--env-file PATH; KEY=VALUE lines as in .env.multi), the process
 * environment, then command-line flags (--health-port=8001 or
 * --HEALTH_PORT=8001). A secret or URL may instead come from NAME_FILE
 * (Docker secrets). Role-dependent defaults: INSTANCE_NUMBER and KEY_INDEX
 * default to the role's number (chat 1, image 2, video 3, admin 4) and
 * HEALTH_PORT to 8000 + INSTANCE_NUMBER. Provider keys are read from the
 * names carrying this instance's KEY_INDEX (OPENAI_API_KEY_1 for chat).
 *
 * Problems are collected, each naming its key and what is wrong; a secret's
 * value never appears in a problem or anywhere else (see secret.h). Core code
 * never calls getenv: it reads struct config. */
#ifndef BC_CONFIG_H
#define BC_CONFIG_H

#include <stddef.h>

#include "base/buf.h"
#include "base/role.h"
#include "base/secret.h"

struct config {
    enum role role;
    int instance;            /* INSTANCE_NUMBER */
    int key_index;           /* KEY_INDEX */
    char name[32];           /* "<role>-<instance>": consumer and log name */
    char *health_bind;
    int health_port;
    int log_level;           /* enum log_level */
    char *redis_url;         /* may carry a password: log with LF_URL */
    char *redis_prefix;
    char *database_url;      /* "" = PostgreSQL not configured */
    int heartbeat_interval_ms;
    int heartbeat_maxlen;
    int stream_maxlen;
    int max_inflight;
    int job_block_ms;
    int claim_idle_ms;
    int failover_after_ms;   /* a peer silent this long is down (failover.h) */
    int queue_wait_max_sec;  /* an interaction job older than this when a worker
                                could start it gets a "busy" reply instead */
    int drain_timeout_sec;
    int diag_jobs;
    struct secret openai_keys;    /* OPENAI_API_KEY_<KEY_INDEX>, comma-separated list */
    struct secret minimax_keys;   /* MINIMAX_API_KEY_<KEY_INDEX> */
    struct secret stability_keys; /* STABILITY_API_KEY_<KEY_INDEX> */

    /* Discord */
    struct secret discord_token;  /* empty: no Discord connection */
    char *discord_app_id;         /* "" = learn from READY */
    char *discord_guild_id;       /* "" = register commands globally */
    char *discord_public_key;     /* hex; "" = no HTTP interactions */
    char *discord_api_base;
    int gateway_mode;             /* enum gateway_mode */
    int gateway_intents;
    int gateway_lease_ms;
    int interaction_max_skew_sec;
    int gateway_compress;
    char *chat_channels;          /* comma-separated globs */
    char *image_channels;
    char *video_channels;
    int enforce_channels;
    char *admin_role_ids;         /* comma-separated role ids allowed the admin
                                     commands besides ADMINISTRATOR; "" = none */
    int register_commands;        /* --register-commands: register and exit */

    /* LLM (chat) */
    char *openai_base_url;
    char *openai_model;
    char *system_prompt;
    int max_tokens;
    double llm_temperature;    /* valid only when has_llm_temperature */
    int has_llm_temperature;   /* 0: not sent, the server's default applies */
    int context_max_tokens;    /* estimated tokens of history sent */
    int context_max_turns;     /* exchanges of history sent; 0 = no memory */
    int session_ttl_minutes;   /* an idle conversation is forgotten after this */
    int llm_timeout_sec;
    int llm_first_token_sec;   /* no text this long: the call is given up */
    int llm_idle_sec;          /* a stream silent this long: given up */
    int edit_interval_ms;
    int user_rate_limit;       /* requests per user per window; 0 = off */
    int user_rate_window_sec;
    int user_daily_limit;      /* requests per user per day (UTC); 0 = off */
    int moderation;            /* check input with the moderations endpoint first */
    char *moderation_model;

    /* images and videos */
    char *minimax_base_url;
    char *minimax_image_model;
    char *minimax_video_model;
    char *stability_base_url;
    int stability_img2img;       /* enum img2img_endpoint */
    char *stability_sd3_model;
    double img2img_strength;
    int has_img2img_strength;
    int image_timeout_sec;
    char *gallery_channel;       /* "" = off */
    int user_daily_images;       /* 0 = off */
    int user_daily_videos;       /* 0 = off */
    int user_max_video_jobs;
    int video_timeout_min;
    int video_poll_sec;
    char *video_dir;
    int video_max_mb;

    char *env_file;          /* path given with --env-file, or NULL */
    struct buf problems;     /* "KEY\tproblem\n" lines, each whole; when not
                              * all fit, the last is "...\tmore problems ..." */
    struct buf warnings;     /* "KEY\twarning\n" lines (unknown keys ...), the same */
};

enum gateway_mode { GATEWAY_AUTO = 0, GATEWAY_ON, GATEWAY_OFF };
enum img2img_endpoint { IMG2IMG_SD3 = 0, IMG2IMG_ULTRA };

enum cfg_action { CFG_RUN = 0, CFG_EXIT_OK = 1, CFG_CHECK_ONLY = 2 };

/* Fill cfg for role from argv, envp and the env file. Returns CFG_RUN,
 * CFG_EXIT_OK (help/version printed to out), CFG_CHECK_ONLY (--check-config:
 * valid, caller prints and exits 0), or BC_ECONFIG with cfg->problems filled.
 * cfg must be released with cfg_free whatever the result. */
int cfg_load(struct config *cfg, enum role role, int argc, char **argv, char **envp, struct buf *out);
void cfg_free(struct config *cfg);

/* Effective settings as "KEY=value" lines, secrets as fingerprints and URLs
 * redacted. Returns 0, or buf_error(out) when out could not hold all of it
 * (the text is then incomplete). */
int cfg_dump(const struct config *cfg, struct buf *out) __attribute__((warn_unused_result));
/* The settings table as a Markdown table (for the README); returns as
 * cfg_dump. */
int cfg_markdown(struct buf *out) __attribute__((warn_unused_result));

#endif
