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

#include "tests/support/testutil.h"

static PGconn *conn;

static int setup(void **state) {
    (void)state;
    const char *dsn = test_pg_dsn();
    if (!dsn)
        return 0;
    conn = PQconnectdb(dsn);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "# connect: %s", PQerrorMessage(conn));
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    if (conn)
        PQfinish(conn);
    return 0;
}

static void exec_ok(const char *sql) {
    PGresult *res = PQexec(conn, sql);
    ExecStatusType status = PQresultStatus(res);
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(conn));
    PQclear(res);
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
    if (!conn) {
        fprintf(stderr, "# SLUICE_TEST_PG_DSN not set: skipped\n");
        skip();
    }
    printf("# postgres: server_version_num=%d\n", PQserverVersion(conn));
    assert_true(PQserverVersion(conn) >= 150000);
    exec_ok("CREATE TEMP TABLE roundtrip (dialog_id text, seq bigint, body text, "
            "PRIMARY KEY (dialog_id, seq))");
    const char *params[3] = {"1:2", "7", "привет, мир"};
    PGresult *res = PQexecParams(conn,
                                 "INSERT INTO roundtrip VALUES ($1, $2, $3) "
                                 "ON CONFLICT (dialog_id, seq) DO UPDATE SET body = excluded.body",
                                 3, NULL, params, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    /* A rolled-back insert leaves nothing behind. */
    exec_ok("BEGIN");
    exec_ok("INSERT INTO roundtrip VALUES ('1:2', 8, 'rolled back')");
    exec_ok("ROLLBACK");
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
