/*
 * cmdparse.h - the pure part of reading requests: assembling newline-framed
 * lines from a byte stream, and splitting one line into token, command and
 * NAME VALUE pairs.  No I/O, no allocation; fuzzed directly.
 */
#ifndef BROKERPKG_CMDPARSE_H
#define BROKERPKG_CMDPARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wire.h"

/* One parsed request.  The strings point into the caller's line buffer. */
struct command {
    int32_t token;
    const char *name;
    int argument_count;
    const char *argument_name[MAX_ARGUMENT_PAIRS];
    const char *argument_value[MAX_ARGUMENT_PAIRS];
    bool too_many_arguments;    /* more pairs than MAX_ARGUMENT_PAIRS */
};

/*
 * Split LINE (LENGTH bytes, no newline) in place into a command.  Words are
 * separated by one or more spaces.  Returns false, with COMMAND unspecified,
 * when the line is not a request: a byte outside 0x20..0x7e, no command word,
 * a token that is not a decimal number in 0..TOKEN_MAX, or a name without a
 * value.  LINE must have room for LENGTH + 1 bytes (words are NUL-terminated
 * in place).
 */
bool parse_command(char *line, size_t length, struct command *command);

enum line_event {
    LINE_NEED_MORE,     /* all input consumed, no complete line yet */
    LINE_COMPLETE,      /* reader->line holds a line of reader->length bytes */
    LINE_OVERFLOW,      /* a line grew past LINE_MAX_BYTES; its rest is skipped */
};

struct line_reader {
    char line[LINE_MAX_BYTES + 1];
    size_t length;
    bool discarding;    /* skipping the tail of an over-long line */
    bool complete;      /* the last event returned a line; start a new one */
};

void line_reader_init(struct line_reader *reader);

/*
 * Consume bytes of DATA until one event happens.  Returns how many bytes were
 * consumed and stores the event.  Call again with the rest of the data until
 * all of it is consumed.  An over-long line yields one LINE_OVERFLOW; the
 * bytes up to and including its newline are then dropped (LINE_NEED_MORE).
 */
size_t line_reader_feed(struct line_reader *reader, const char *data,
                        size_t size, enum line_event *event);

/*
 * At end of input: true if a final line without a newline is pending, in
 * which case it is made available in reader->line / reader->length.
 */
bool line_reader_finish(struct line_reader *reader);

#endif
