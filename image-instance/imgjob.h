/* imgjob: the image role's commands.
 *
 *  /이미지 [설명] [비율] [개수]  MiniMax (MINIMAX_IMAGE_MODEL): count 1-4 images at
 *                              an aspect ratio, downloaded from the returned URLs;
 *  /img [설명] [이미지] [강도]   Stability: text only → core; with an image →
 *                              image-to-image on sd3 or ultra (STABILITY_IMG2IMG)
 *                              at strength 0-1 (IMG2IMG_STRENGTH when not given).
 * The deferred response says what is being made, then is edited with the
 * images attached and the prompt in an embed; with GALLERY_CHANNEL set they
 * are also posted there, naming the author. An attachment is checked (type
 * and size from Discord's data, then its bytes, fetched with a cap) before
 * any paid request. Keys come from the instance's MiniMax and Stability key
 * pools (rotation, cooldowns, circuit breaker); refusals (moderation,
 * filtered output) are told plainly; a request that fails gives its units
 * back to the user's daily quota (USER_DAILY_IMAGES). Usage is recorded per
 * user and day with Stability's credit estimate. See docs/images.md. */
#ifndef BC_IMGJOB_H
#define BC_IMGJOB_H

struct core;

/* Register the image commands' handler on core_bus(c). */
int imgjob_setup(struct core *c);


/* ---- internal: shared with the tests and the fuzz target ---------------- */

#include "discord/ixjob.h"

/* What an image interaction asks for, read from its options. */
struct imgjob__req {
    int stability;                /* 0: MiniMax (/이미지), 1: Stability (/img) */
    const char *prompt;           /* borrowed from the job; NULL when absent */
    const char *ratio;            /* MiniMax: one of the supported ratios (static) */
    int count;                    /* images, 1..PIC_MAX */
    int has_image;                /* Stability: an attachment was given (att) */
    struct ixjob_attachment att;  /* strings borrowed from the job */
    double strength;              /* Stability: 0..1 */
};

/* Read ix's options. Pure. Returns 0, or -EINVAL when ix is not an image
 * command. default_strength is IMG2IMG_STRENGTH. */
int imgjob__decode(const struct ixjob *ix, double default_strength, struct imgjob__req *out);

#endif
