/* Unit tests: the gateway's waiter table (replies.h): a reply reaches the
 * waiter of its correlation id, unknown and late replies find nobody, a
 * timeout frees the slot, a full table says so, and ids are unguessable. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "processor/gateway/replies.h"

static Sluice__V1__Reply *make_reply(const char *correlation, const char *type) {
    Sluice__V1__Reply *reply = calloc(1, sizeof(*reply));
    assert_non_null(reply);
    sluice__v1__reply__init(reply);
    reply->correlation_id = strdup(correlation);
    reply->command_id = strdup("cmd-1");
    reply->type = strdup(type);
    return reply;
}

/* Replies built by make_reply are freed like unpacked ones (protobuf-c's
 * free_unpacked frees every string with the same allocator). */

static void a_delivered_reply_reaches_its_waiter(void **state) {
    (void)state;
    sl_waiters *w = sl_waiters_new(4);
    char id[SL_CORRELATION_ID_SIZE];
    assert_int_equal(sl_waiters_register(w, id), SL_OK);
    assert_int_equal(strlen(id), SL_CORRELATION_ID_SIZE - 1);
    assert_true(sl_waiters_deliver(w, id, make_reply(id, "sluice.v1.UserRegistered")));
    Sluice__V1__Reply *reply = NULL;
    assert_int_equal(sl_waiters_wait(w, id, 1000, &reply), SL_OK);
    assert_non_null(reply);
    assert_string_equal(reply->type, "sluice.v1.UserRegistered");
    sl_reply_free(reply);
    assert_int_equal(sl_waiters_in_use(w), 0);
    sl_waiters_destroy(w);
}

static void unknown_and_forged_ids_find_nobody(void **state) {
    (void)state;
    sl_waiters *w = sl_waiters_new(4);
    char id[SL_CORRELATION_ID_SIZE];
    assert_int_equal(sl_waiters_register(w, id), SL_OK);
    char forged[SL_CORRELATION_ID_SIZE];
    memcpy(forged, id, sizeof(forged));
    forged[20] = forged[20] == 'a' ? 'b' : 'a'; /* right slot, wrong random part */
    const char *unknown[] = {forged, "", "zz", "ffffffff00000000000000000000000000000000", NULL};
    for (size_t i = 0; i < 5; i++) {
        Sluice__V1__Reply *reply = make_reply("x", "t");
        assert_false(sl_waiters_deliver(w, unknown[i], reply));
        sl_reply_free(reply);
    }
    Sluice__V1__Reply *reply = NULL;
    assert_int_equal(sl_waiters_wait(w, forged, 10, &reply), SL_ERR_NOT_FOUND);
    assert_int_equal(sl_waiters_wait(w, id, 10, &reply), SL_ERR_TIMEOUT); /* still waiting */
    sl_waiters_destroy(w);
}

static void a_timeout_frees_the_slot_and_a_late_reply_is_refused(void **state) {
    (void)state;
    sl_waiters *w = sl_waiters_new(1);
    char id[SL_CORRELATION_ID_SIZE];
    assert_int_equal(sl_waiters_register(w, id), SL_OK);
    Sluice__V1__Reply *reply = NULL;
    assert_int_equal(sl_waiters_wait(w, id, 20, &reply), SL_ERR_TIMEOUT);
    assert_null(reply);
    assert_int_equal(sl_waiters_in_use(w), 0);
    Sluice__V1__Reply *late = make_reply(id, "t");
    assert_false(sl_waiters_deliver(w, id, late));
    sl_reply_free(late);
    /* the slot is reused under a new id; the old one still finds nothing */
    char id2[SL_CORRELATION_ID_SIZE];
    assert_int_equal(sl_waiters_register(w, id2), SL_OK);
    assert_string_not_equal(id, id2);
    late = make_reply(id, "t");
    assert_false(sl_waiters_deliver(w, id, late));
    sl_reply_free(late);
    sl_waiters_cancel(w, id2);
    assert_int_equal(sl_waiters_in_use(w), 0);
    sl_waiters_destroy(w);
}

static void a_full_table_refuses_new_waiters(void **state) {
    (void)state;
    sl_waiters *w = sl_waiters_new(3);
    char ids[4][SL_CORRELATION_ID_SIZE];
    for (int i = 0; i < 3; i++)
        assert_int_equal(sl_waiters_register(w, ids[i]), SL_OK);
    assert_int_equal(sl_waiters_register(w, ids[3]), SL_ERR_FULL);
    sl_waiters_cancel(w, ids[1]);
    assert_int_equal(sl_waiters_register(w, ids[3]), SL_OK);
    /* an answered but never collected reply is freed with the table */
    assert_true(sl_waiters_deliver(w, ids[0], make_reply(ids[0], "t")));
    sl_waiters_destroy(w);
}

static void a_failed_produce_wakes_the_waiter_with_its_error(void **state) {
    (void)state;
    sl_waiters *w = sl_waiters_new(2);
    char id[SL_CORRELATION_ID_SIZE];
    assert_int_equal(sl_waiters_register(w, id), SL_OK);
    assert_true(sl_waiters_fail(w, id, SL_ERR_KAFKA));
    Sluice__V1__Reply *reply = NULL;
    assert_int_equal(sl_waiters_wait(w, id, 1000, &reply), SL_ERR_KAFKA);
    sl_waiters_destroy(w);
}

typedef struct delivery {
    sl_waiters *w;
    char id[SL_CORRELATION_ID_SIZE];
    pthread_barrier_t *go;
} delivery;

static void *deliver_later(void *arg) {
    delivery *d = arg;
    pthread_barrier_wait(d->go);
    while (!sl_waiters_deliver(d->w, d->id, make_reply(d->id, "late")))
        ; /* not reached: the waiter is registered before the thread starts */
    return NULL;
}

static void a_reply_from_another_thread_wakes_many_waiters(void **state) {
    (void)state;
    enum { N = 32 };
    sl_waiters *w = sl_waiters_new(N);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, N + 1);
    delivery d[N];
    pthread_t threads[N];
    for (int i = 0; i < N; i++) {
        d[i].w = w;
        d[i].go = &go;
        assert_int_equal(sl_waiters_register(w, d[i].id), SL_OK);
        pthread_create(&threads[i], NULL, deliver_later, &d[i]);
    }
    pthread_barrier_wait(&go);
    for (int i = 0; i < N; i++) {
        Sluice__V1__Reply *reply = NULL;
        assert_int_equal(sl_waiters_wait(w, d[i].id, 10000, &reply), SL_OK);
        assert_string_equal(reply->correlation_id, d[i].id);
        sl_reply_free(reply);
    }
    for (int i = 0; i < N; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&go);
    assert_int_equal(sl_waiters_in_use(w), 0);
    sl_waiters_destroy(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_delivered_reply_reaches_its_waiter),
        cmocka_unit_test(unknown_and_forged_ids_find_nobody),
        cmocka_unit_test(a_timeout_frees_the_slot_and_a_late_reply_is_refused),
        cmocka_unit_test(a_full_table_refuses_new_waiters),
        cmocka_unit_test(a_failed_produce_wakes_the_waiter_with_its_error),
        cmocka_unit_test(a_reply_from_another_thread_wakes_many_waiters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
