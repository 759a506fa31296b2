/* postgres.c: the Postgres fixture of the integration tests (see postgres.h). */
#include "tests/support/postgres.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/testutil.h"

PGconn *test_pg_connect(void) {
    const char *dsn = test_pg_dsn();
    if (!dsn)
        return NULL;
    PGconn *conn = PQconnectdb(dsn);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "# connect: %s", PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

void test_pg_exec(PGconn *conn, const char *sql) {
    PGresult *res = PQexec(conn, sql);
    ExecStatusType status = PQresultStatus(res);
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(conn));
    PQclear(res);
}

long long test_pg_query_int(PGconn *conn, const char *sql) {
    if (PQstatus(conn) != CONNECTION_OK)
        PQreset(conn);
    PGresult *res = PQexec(conn, sql);
    long long v = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
        v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

PGconn *test_pg_create_database(const char *db, char *dsn, size_t dsn_size) {
    const char *base = test_pg_dsn();
    assert_non_null(base);
    PGconn *root = PQconnectdb(base);
    assert_int_equal(PQstatus(root), CONNECTION_OK);
    char sql[128];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db);
    test_pg_exec(root, sql);
    PQfinish(root);
    const char *slash = strrchr(base, '/');
    assert_non_null(slash);
    snprintf(dsn, dsn_size, "%.*s/%s", (int)(slash - base), base, db);
    PGconn *conn = PQconnectdb(dsn);
    assert_int_equal(PQstatus(conn), CONNECTION_OK);
    return conn;
}
