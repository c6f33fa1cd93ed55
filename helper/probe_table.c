/*
 * probe_table.c - probes in flight (see probe_table.h).
 *
 * Probes live in chunks allocated on first use, so a helper that never has
 * many probes in flight stays small; freed slots are reused first.  Two
 * chained hash indexes (token, wire key) and a binary min-heap of deadlines
 * refer to probes by slot number.
 */
#include "probe_table.h"

#include <stdlib.h>
#include <string.h>

#define CHUNK_SHIFT 12
#define CHUNK_SIZE (1u << CHUNK_SHIFT)
#define NO_SLOT 0u          /* chain links store slot + 1 */

/* The deadline sits beside the slot: sifting reads no probe. */
struct heap_entry {
    uint64_t deadline_ns;
    uint32_t slot;
};

struct probe_table {
    unsigned capacity;
    unsigned count;
    unsigned slots_touched;     /* slots below this have been handed out */
    struct probe **chunks;
    uint32_t *free_slots;       /* stack of freed slots */
    unsigned free_count;
    uint32_t bucket_mask;
    uint32_t *token_buckets;    /* slot + 1 of the chain head */
    uint32_t *wire_buckets;
    struct heap_entry *heap;    /* probes ordered by deadline */
    uint32_t generation;        /* of the last probe handed out */
};

static uint32_t mix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

/*
 * Keys that differ only in their low RUN_BITS bits (consecutive tokens,
 * consecutive ICMP sequences) land in neighbouring buckets, so a run of
 * probes touches a few cache lines instead of one per probe; the bits above
 * are mixed, so keys that share their low bits still spread.
 */
#define RUN_BITS 10

static uint32_t spread(uint32_t key)
{
    return key ^ mix32(key >> RUN_BITS) << RUN_BITS;
}

static uint32_t token_bucket(const struct probe_table *t, int32_t token)
{
    return spread((uint32_t)token) & t->bucket_mask;
}

static uint32_t wire_bucket(const struct probe_table *t,
                            enum probe_protocol protocol, uint32_t key)
{
    return spread(key ^ ((uint32_t)protocol << 28)) & t->bucket_mask;
}

static struct probe *slot_probe(const struct probe_table *t, uint32_t slot)
{
    return &t->chunks[slot >> CHUNK_SHIFT][slot & (CHUNK_SIZE - 1)];
}

static void heap_place(struct probe_table *t, unsigned index,
                       struct heap_entry entry)
{
    t->heap[index] = entry;
    slot_probe(t, entry.slot)->heap_index = index;
}

struct probe_table *probe_table_create(unsigned capacity)
{
    struct probe_table *t = calloc(1, sizeof(*t));
    unsigned buckets = 1;

    if (t == NULL) {
        return NULL;
    }
    while (buckets < capacity * 2) {
        buckets <<= 1;
    }
    t->capacity = capacity;
    t->bucket_mask = buckets - 1;
    t->chunks = calloc((capacity + CHUNK_SIZE - 1) / CHUNK_SIZE,
                       sizeof(*t->chunks));
    t->free_slots = calloc(capacity, sizeof(*t->free_slots));
    t->token_buckets = calloc(buckets, sizeof(*t->token_buckets));
    t->wire_buckets = calloc(buckets, sizeof(*t->wire_buckets));
    t->heap = calloc(capacity, sizeof(*t->heap));
    if (t->chunks == NULL || t->free_slots == NULL || t->token_buckets == NULL
        || t->wire_buckets == NULL || t->heap == NULL) {
        probe_table_destroy(t);
        return NULL;
    }
    return t;
}

void probe_table_destroy(struct probe_table *t)
{
    if (t == NULL) {
        return;
    }
    if (t->chunks != NULL) {
        for (unsigned c = 0; c < (t->capacity + CHUNK_SIZE - 1) / CHUNK_SIZE;
             c++) {
            free(t->chunks[c]);
        }
    }
    free(t->chunks);
    free(t->free_slots);
    free(t->token_buckets);
    free(t->wire_buckets);
    free(t->heap);
    free(t);
}

unsigned probe_table_count(const struct probe_table *t)
{
    return t->count;
}

unsigned probe_table_capacity(const struct probe_table *t)
{
    return t->capacity;
}

/* A slot not in use, or false when the table is full or out of memory. */
static bool take_slot(struct probe_table *t, uint32_t *slot)
{
    if (t->free_count > 0) {
        *slot = t->free_slots[--t->free_count];
        return true;
    }
    if (t->slots_touched == t->capacity) {
        return false;
    }
    if ((t->slots_touched & (CHUNK_SIZE - 1)) == 0) {
        unsigned chunk = t->slots_touched >> CHUNK_SHIFT;

        t->chunks[chunk] = calloc(CHUNK_SIZE, sizeof(struct probe));
        if (t->chunks[chunk] == NULL) {
            return false;
        }
    }
    *slot = t->slots_touched++;
    return true;
}

struct probe *probe_alloc(struct probe_table *t, int32_t token)
{
    uint32_t slot;
    struct probe *probe;
    uint32_t bucket;

    if (t->count == t->capacity || !take_slot(t, &slot)) {
        return NULL;
    }
    probe = slot_probe(t, slot);
    memset(probe, 0, sizeof(*probe));
    probe->slot = slot;
    probe->in_use = true;
    probe->generation = ++t->generation;
    probe->token = token;
    probe->deadline_ns = UINT64_MAX;
    bucket = token_bucket(t, token);
    probe->token_next = t->token_buckets[bucket];
    t->token_buckets[bucket] = slot + 1;
    heap_place(t, t->count,
               (struct heap_entry){.deadline_ns = UINT64_MAX, .slot = slot});
    t->count++;
    return probe;
}

struct probe *probe_by_token(const struct probe_table *t, int32_t token)
{
    uint32_t link = t->token_buckets[token_bucket(t, token)];

    while (link != NO_SLOT) {
        struct probe *probe = slot_probe(t, link - 1);

        if (probe->token == token) {
            return probe;
        }
        link = probe->token_next;
    }
    return NULL;
}

static void unlink_token(struct probe_table *t, uint32_t slot)
{
    uint32_t *link = &t->token_buckets[token_bucket(t, slot_probe(t, slot)->token)];

    while (*link != NO_SLOT) {
        struct probe *probe = slot_probe(t, *link - 1);

        if (*link - 1 == slot) {
            *link = probe->token_next;
            return;
        }
        link = &probe->token_next;
    }
}

static void unlink_wire(struct probe_table *t, uint32_t slot)
{
    struct probe *target = slot_probe(t, slot);
    uint32_t *link =
        &t->wire_buckets[wire_bucket(t, target->protocol, target->wire_key)];

    while (*link != NO_SLOT) {
        struct probe *probe = slot_probe(t, *link - 1);

        if (*link - 1 == slot) {
            *link = probe->wire_next;
            target->wire_linked = false;
            return;
        }
        link = &probe->wire_next;
    }
}

void probe_link_wire_key(struct probe_table *t, struct probe *probe,
                         uint32_t key)
{
    uint32_t slot = probe->slot;
    uint32_t bucket;

    if (probe->wire_linked) {
        unlink_wire(t, slot);
    }
    probe->wire_key = key;
    bucket = wire_bucket(t, probe->protocol, key);
    probe->wire_next = t->wire_buckets[bucket];
    t->wire_buckets[bucket] = slot + 1;
    probe->wire_linked = true;
}

void probe_unlink_wire_key(struct probe_table *t, struct probe *probe)
{
    if (probe->wire_linked) {
        unlink_wire(t, probe->slot);
    }
}

/* Continue a wire chain from LINK to the next probe with PROTOCOL and KEY. */
static struct probe *wire_scan(const struct probe_table *t, uint32_t link,
                               enum probe_protocol protocol, uint32_t key)
{
    while (link != NO_SLOT) {
        struct probe *probe = slot_probe(t, link - 1);

        if (probe->protocol == protocol && probe->wire_key == key) {
            return probe;
        }
        link = probe->wire_next;
    }
    return NULL;
}

struct probe *probe_wire_first(const struct probe_table *t,
                               enum probe_protocol protocol, uint32_t key)
{
    return wire_scan(t, t->wire_buckets[wire_bucket(t, protocol, key)],
                     protocol, key);
}

struct probe *probe_wire_next(const struct probe_table *t,
                              const struct probe *probe)
{
    return wire_scan(t, probe->wire_next, probe->protocol, probe->wire_key);
}

/* Deadline heap: every probe in the table is in it, t->count entries. */

static void heap_sift_up(struct probe_table *t, unsigned index)
{
    struct heap_entry entry = t->heap[index];

    while (index > 0) {
        unsigned parent = (index - 1) / 2;

        if (t->heap[parent].deadline_ns <= entry.deadline_ns) {
            break;
        }
        heap_place(t, index, t->heap[parent]);
        index = parent;
    }
    heap_place(t, index, entry);
}

static void heap_sift_down(struct probe_table *t, unsigned index)
{
    struct heap_entry entry = t->heap[index];

    for (;;) {
        unsigned child = 2 * index + 1;

        if (child >= t->count) {
            break;
        }
        if (child + 1 < t->count
            && t->heap[child + 1].deadline_ns < t->heap[child].deadline_ns) {
            child++;
        }
        if (t->heap[child].deadline_ns >= entry.deadline_ns) {
            break;
        }
        heap_place(t, index, t->heap[child]);
        index = child;
    }
    heap_place(t, index, entry);
}

void probe_set_deadline(struct probe_table *t, struct probe *probe,
                        uint64_t deadline_ns)
{
    probe->deadline_ns = deadline_ns;
    t->heap[probe->heap_index].deadline_ns = deadline_ns;
    heap_sift_up(t, probe->heap_index);
    heap_sift_down(t, probe->heap_index);
}

struct probe *probe_earliest(const struct probe_table *t)
{
    return t->count == 0 ? NULL : slot_probe(t, t->heap[0].slot);
}

void probe_free(struct probe_table *t, struct probe *probe)
{
    uint32_t slot = probe->slot;
    unsigned index = probe->heap_index;
    struct heap_entry last = t->heap[t->count - 1];

    unlink_token(t, slot);
    if (probe->wire_linked) {
        unlink_wire(t, slot);
    }
    t->count--;
    if (index != t->count) {
        heap_place(t, index, last);
        heap_sift_up(t, index);
        heap_sift_down(t, slot_probe(t, last.slot)->heap_index);
    }
    probe->in_use = false;
    t->free_slots[t->free_count++] = slot;
}

struct probe *probe_by_slot(const struct probe_table *t, uint32_t slot,
                            uint32_t generation)
{
    struct probe *probe;

    if (slot >= t->slots_touched) {
        return NULL;
    }
    probe = slot_probe(t, slot);
    return probe->in_use && probe->generation == generation ? probe : NULL;
}
