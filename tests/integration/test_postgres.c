/* Integration tests against the real PostgreSQL the harness started
 * (SLUICE_TEST_PG_DSN). Skipped without it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/broker.h"
#include "tests/support/postgres.h"
#include "tests/support/testutil.h"

static PGconn *conn;

static int setup(void **state) {
    (void)state;
    if (!test_pg_dsn())
        return 0;
    conn = test_pg_connect();
    return conn ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    if (conn)
        PQfinish(conn);
    return 0;
}

static long long count_rows(void) {
    PGresult *res = PQexec(conn, "SELECT count(*) FROM roundtrip");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    long long n = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return n;
}

static void libpq_round_trip(void **state) {
    (void)state;
    test_skip_unless(conn, TEST_NO_PG);
    printf("# postgres: server_version_num=%d\n", PQserverVersion(conn));
    assert_true(PQserverVersion(conn) >= 150000);
    test_pg_exec(conn, "CREATE TEMP TABLE roundtrip (dialog_id text, seq bigint, body text, "
                       "PRIMARY KEY (dialog_id, seq))");
    const char *params[3] = {"1:2", "7", "привет, мир"};
    PGresult *res = PQexecParams(conn,
                                 "INSERT INTO roundtrip VALUES ($1, $2, $3) "
                                 "ON CONFLICT (dialog_id, seq) DO UPDATE SET body = excluded.body",
                                 3, NULL, params, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    /* A rolled-back insert leaves nothing behind. */
    test_pg_exec(conn, "BEGIN");
    test_pg_exec(conn, "INSERT INTO roundtrip VALUES ('1:2', 8, 'rolled back')");
    test_pg_exec(conn, "ROLLBACK");
    assert_int_equal(count_rows(), 1);
    res = PQexecParams(conn, "SELECT seq, body FROM roundtrip WHERE dialog_id = $1", 1, NULL,
                       params, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(res), 1);
    assert_string_equal(PQgetvalue(res, 0, 0), "7");
    assert_string_equal(PQgetvalue(res, 0, 1), "привет, мир");
    PQclear(res);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(libpq_round_trip),
    };
    return cmocka_run_group_tests_name("postgres", tests, setup, teardown);
}
