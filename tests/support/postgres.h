/*
 * postgres.h: the Postgres fixture of the integration tests. The harness
 * gives the server it started in SLUICE_TEST_PG_DSN (test_pg_dsn()); a test
 * that needs it skips without it. A test that writes tables takes a
 * database of its own on that server, so tests never see each other's rows.
 *
 * Everything here runs on the test's thread and fails the running cmocka
 * test on error, except test_pg_query_int.
 */
#ifndef SLUICE_TEST_POSTGRES_H
#define SLUICE_TEST_POSTGRES_H

#include <libpq-fe.h>
#include <stddef.h>

/* Connect to the harness's database; the caller owns the connection
 * (PQfinish). NULL when SLUICE_TEST_PG_DSN is unset; fails the setup
 * (returns NULL after printing why) when the server refuses. */
PGconn *test_pg_connect(void);

/* Run `sql`, which must succeed (a command or a query). */
void test_pg_exec(PGconn *conn, const char *sql);

/* The single integer `sql` answers, or -1 when the query fails (server
 * down, table not made yet); a broken connection is reset first. */
long long test_pg_query_int(PGconn *conn, const char *sql);

/* CREATE DATABASE `db` on the harness's server, write its DSN (the
 * harness's with the other database name) into `dsn` and return a
 * connection to it, owned by the caller. */
PGconn *test_pg_create_database(const char *db, char *dsn, size_t dsn_size);

#endif
