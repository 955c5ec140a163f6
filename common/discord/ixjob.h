/* ixjob: the worker's side of an interaction job.
 *
 * The ingress stores an interaction as a job with everything a worker
 * needs (see ingress.h); ixjob parses that payload and answers through the
 * interaction's webhook: the deferred response is edited in place. An edit
 * may reach Discord before the ingress's deferral does (the job is stored
 * first, then deferred): a 404 within the first seconds is retried briefly.
 * After the token's 15 minutes the webhook is gone (50027); callers that
 * can run that long post to the channel instead.
 *
 * ixjob_edit_original and ixjob_edit_files call cb exactly once (unless
 * cancelled), always later from the loop, never from inside the call: also
 * when the request cannot even be queued (no REST client, an app id or
 * token dpath refuses, drest refused it), then with that error on the next
 * loop turn. */
#ifndef BC_IXJOB_H
#define BC_IXJOB_H

#include <json.h>
#include <stdint.h>
#include <uv.h>

struct cmd_def;
struct drest;

struct ixjob {
    struct json_object *root; /* owned; the strings below point into it */
    const char *id, *token, *app_id, *command, *locale, *user_id, *channel_id, *guild_id;
    const struct cmd_def *cmd; /* the command's row (cmds_find), NULL if none has that name */
    int en;                   /* the command is an English twin: its options go by their English names */
    int ko;                   /* answer in Korean */
    int64_t received_ms, token_expires_ms;
};

/* Parse payload and find its command's row. Returns 0, or BC_EPROTO (j is
 * then empty, safe to free). */
int ixjob_parse(struct ixjob *j, const char *payload);
void ixjob_free(struct ixjob *j);
/* Options go by their key in the command's row (cmd_option.key), whatever
 * the language of the command that was used; none is found when the
 * command has no row or no option with that key. */
/* The string option key, or NULL. */
const char *ixjob_option(const struct ixjob *j, const char *key);

/* The number option key (INTEGER or NUMBER): 1 and *out, or 0. */
int ixjob_option_num(const struct ixjob *j, const char *key, double *out);

/* The attachment option key, from the interaction's resolved data.
 * Strings point into the job (NULL when absent). */
struct ixjob_attachment {
    const char *url, *filename, *content_type;
    int64_t size;
};
int ixjob_attachment(const struct ixjob *j, const char *key, struct ixjob_attachment *out);

/* status 0 when Discord accepted the edit, else the drest error or HTTP
 * status (negative), with Discord's code in *code. */
typedef void ixjob_cb(int status, int code, void *arg);
struct ixjob_edit;

/* PATCH /webhooks/{app}/{token}/messages/@original with json. The job may
 * be freed once this returns (what is needed is copied). Returns a handle
 * valid until cb runs (or until ixjob_edit_cancel); cb runs exactly once,
 * later (status -ENOTCONN when rest is NULL, drest_request's error when it
 * refused the request, -EINVAL when the app id or token is not one, see
 * dpath.h). Returns NULL for bad arguments (no loop, job without app id or
 * token, no json, no cb), and then cb never runs. */
struct ixjob_edit *ixjob_edit_original(uv_loop_t *loop, struct drest *rest, const struct ixjob *j,
                                       const char *json, ixjob_cb *cb, void *arg);
/* The same with files attached (multipart; json must list them in its
 * "attachments"). files stay borrowed until cb runs or the edit is
 * cancelled (a 404 retry sends them again). */
struct drest_file;
struct ixjob_edit *ixjob_edit_files(uv_loop_t *loop, struct drest *rest, const struct ixjob *j, const char *json,
                                    const struct drest_file *files, int nfiles, ixjob_cb *cb, void *arg);
/* The caller is going away: cb will not run; the edit cleans up by itself. */
void ixjob_edit_cancel(struct ixjob_edit *e);

#endif
