/*
 * cmdparse.c - newline framing and request tokenizing (pure, see cmdparse.h).
 */
#include "cmdparse.h"

#include <string.h>

static bool is_request_byte(unsigned char byte)
{
    return byte >= 0x20 && byte <= 0x7e;
}

/* Strictly decimal, no sign, at most TOKEN_MAX. */
static bool parse_token(const char *word, int32_t *token)
{
    long value = 0;

    if (*word == '\0') {
        return false;
    }
    for (const char *p = word; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return false;
        }
        value = value * 10 + (*p - '0');
        if (value > TOKEN_MAX) {
            return false;
        }
    }
    *token = (int32_t)value;
    return true;
}

/* Split LINE at spaces; store up to MAX words; return the number found. */
static size_t split_words(char *line, size_t length, char **words, size_t max,
                          bool *overflowed)
{
    size_t count = 0;
    size_t i = 0;

    *overflowed = false;
    while (i < length) {
        while (i < length && line[i] == ' ') {
            line[i++] = '\0';
        }
        if (i == length) {
            break;
        }
        if (count >= max) {
            *overflowed = true;
            /* keep counting so odd word counts are still detected */
        } else {
            words[count] = &line[i];
        }
        count++;
        while (i < length && line[i] != ' ') {
            i++;
        }
    }
    line[length] = '\0';
    return count;
}

bool parse_command(char *line, size_t length, struct command *command)
{
    enum { MAX_WORDS = 2 + 2 * MAX_ARGUMENT_PAIRS };
    char *words[MAX_WORDS];
    bool overflowed;
    size_t count;

    for (size_t i = 0; i < length; i++) {
        if (!is_request_byte((unsigned char)line[i])) {
            return false;
        }
    }
    count = split_words(line, length, words, MAX_WORDS, &overflowed);
    if (count < 2 || count % 2 != 0) {
        return false;
    }
    if (!parse_token(words[0], &command->token)) {
        return false;
    }
    command->name = words[1];
    command->too_many_arguments = overflowed;
    command->argument_count = 0;
    if (overflowed) {
        return true;
    }
    for (size_t w = 2; w + 1 < count; w += 2) {
        command->argument_name[command->argument_count] = words[w];
        command->argument_value[command->argument_count] = words[w + 1];
        command->argument_count++;
    }
    return true;
}

void line_reader_init(struct line_reader *reader)
{
    reader->length = 0;
    reader->discarding = false;
    reader->complete = false;
}

size_t line_reader_feed(struct line_reader *reader, const char *data,
                        size_t size, enum line_event *event)
{
    const char *newline = memchr(data, '\n', size);
    size_t take = newline != NULL ? (size_t)(newline - data) : size;

    if (reader->complete) {
        reader->length = 0;
        reader->complete = false;
    }
    if (reader->discarding) {
        reader->discarding = newline == NULL;
        *event = LINE_NEED_MORE;
        return newline != NULL ? take + 1 : size;
    }
    if (reader->length + take > LINE_MAX_BYTES) {
        reader->length = 0;
        reader->discarding = newline == NULL;
        *event = LINE_OVERFLOW;
        return newline != NULL ? take + 1 : size;
    }
    memcpy(reader->line + reader->length, data, take);
    reader->length += take;
    if (newline == NULL) {
        *event = LINE_NEED_MORE;
        return size;
    }
    reader->complete = true;
    *event = LINE_COMPLETE;
    return take + 1;
}

bool line_reader_finish(struct line_reader *reader)
{
    if (reader->complete || reader->discarding || reader->length == 0) {
        return false;
    }
    reader->complete = true;
    return true;
}
