/* What the command files of hybrid-exp share: the error and usage prints of main.c (options are
 * parsed with core/args.h), and the commands kept in their own files (data_cmds.c: tokenizer, tokenize, eval; the text codec
 * that generate and eval use). */
#ifndef HY_CLI_CLI_H
#define HY_CLI_CLI_H
#include "core/args.h"
#include "experiments/tokenizer.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Prints "hybrid-exp: WHAT: <last error>" and returns code. */
int fail(int code, const char *what);
/* A usage error: prints "hybrid-exp CMD: <last error>" (cmd NULL: "hybrid-exp: ..."), then the
 * help text if one is given, to stderr, and returns 2. */
int cli_usage(const char *cmd, const char *help);

int cmd_tokenizer(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_eval(int argc, char **argv);

/* How a checkpoint's tokens map to text: bytes, or the pieces of its SentencePiece tokenizer. */
typedef struct {
    char tokenizer[1024];   /* "" = bytes */
    hy_tokenizer *tok;
    char *pieces;           /* the text bytes of every id, back to back */
    size_t *at;             /* id i: pieces[at[i] .. at[i+1]) */
    int n;
} cli_codec;
/* The codec of checkpoint ckpt (vocab_size V), with the tokenizer given (NULL: the one the
 * checkpoint records; hy_checkpoint_tokenizer). Returns 0, or the exit code after printing why
 * (cmd names the command). */
int cli_codec_open(cli_codec *c, const char *cmd, const char *ckpt, const char *given, int V);
void cli_codec_free(cli_codec *c);
/* The tokens of len bytes of text (malloc'd), each checked against V. Returns 0 or the exit code. */
int cli_codec_encode(const cli_codec *c, const char *cmd, const char *text, size_t len, int V, int32_t **ids, size_t *n);
/* Writes the text of token id to out (nothing for an id the tokenizer does not have). */
void cli_codec_emit(const cli_codec *c, int32_t id, FILE *out);

#endif
