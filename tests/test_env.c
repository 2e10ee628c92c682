/* SPDX-License-Identifier: MIT */
/* Tests of the environment table (src/env.c): getters, spardl_env_check, help and markdown, and spardl_comm_create's use of them. */
#define _GNU_SOURCE
#include <check.h>

#include "unit.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spardl/spardl.h>

#include "env.h"

/* Start from a known environment whatever launched the tests: every
 * variable in the table unset, logging quiet. */
static void clear_env(void)
{
	const char *name;

	for (size_t i = 0; (name = spardl_env_name(i)); i++)
		unsetenv(name);
	setenv("SPARDL_DEBUG", "none", 1);
}

static void set(const char *name, const char *value)
{
	ck_assert_int_eq(setenv(name, value, 1), 0);
}

struct env_case {
	const char *name, *value;
	int ranks; /* malformed: 2 where the variable is read only to find the rendezvous */
};

/* ---------------------------------------------------------------- */
/* Through spardl_comm_create                                        */

/* Each alone makes spardl_comm_create fail with -SPARDL_ERR_ENV naming it:
 * SPARDL_ ones through spardl_env_check or where they are read, launchers'
 * ones where they are read (two ranks and no SPARDL_BOOTSTRAP: the local
 * size decides the default rendezvous, before any wait). */
static const struct env_case malformed[] = {
	{ "SPARDL_TIMEOUT", "abc" },
	{ "SPARDL_TIMEOUT", "0" },
	{ "SPARDL_DEBUG", "loud" },
	{ "SPARDL_DEBUG", "4" },
	{ "SPARDL_LOCAL_SIZE", "abc" },
	{ "SPARDL_LOCAL_SIZE", "0" },
	{ "SPARDL_LOCAL_RANK", "-1" },
	{ "OMPI_COMM_WORLD_LOCAL_SIZE", "abc", 2 },
	{ "LOCAL_WORLD_SIZE", "abc", 2 },
	{ "SPARDL_MAX_WRITE", "8" },
	{ "SPARDL_MAX_WRITE", "63" },
	{ "SPARDL_MAX_WRITE", "-1" },
	{ "SPARDL_MAX_WRITE", "4611686018427387905" },
	{ "SPARDL_SHM_SPIN", "abc" },
	{ "SPARDL_SHM_SPIN", "1000001" },
	{ "SPARDL_TRANSPORT", "bogus" },
	{ "SPARDL_VERBS_TIMEOUT", "32" },
	{ "SPARDL_VERBS_RETRY_CNT", "8" },
	{ "SPARDL_VERBS_SPIN", "fast" },
	{ "SPARDL_VERBS_GID_INDEX", "-1" },
	{ "SPARDL_JOB_KEY_FILE", "/nonexistent/spardl-key" },
	{ "MASTER_PORT", "http", 2 },
};

START_TEST(test_malformed_fails_create)
{
	const struct env_case *c = &malformed[_i];
	struct spardl_comm *comm = (void *)1;
	char want[128];
	int ret;

	clear_env();
	set("SPARDL_RANK", "0");
	set("SPARDL_SIZE", c->ranks == 2 ? "2" : "1");
	set("SPARDL_TIMEOUT", "2");
	set("SPARDL_TRANSPORT", "shm");
	if (!strcmp(c->name, "MASTER_PORT"))
		set("MASTER_ADDR", "localhost");
	set(c->name, c->value);
	ret = spardl_comm_create(NULL, &comm);
	snprintf(want, sizeof(want), "%s=%s", c->name, c->value);
	ck_assert_msg(ret == -SPARDL_ERR_ENV, "%s: returned %d (%s): %s", want, ret, spardl_strerror(ret),
		      spardl_last_error());
	ck_assert_msg(strstr(spardl_last_error(), want), "message lacks \"%s\": %s", want, spardl_last_error());
	ck_assert_ptr_eq(comm, (void *)1);
}
END_TEST

/* Each alone leaves a one-rank spardl_comm_create working. */
static const struct env_case valid[] = {
	{ "SPARDL_TIMEOUT", "5" },
	{ "SPARDL_TIMEOUT", "" }, /* empty is unset */
	{ "SPARDL_DEBUG", "NONE" },
	{ "SPARDL_DEBUG", "0" },
	{ "SPARDL_LOCAL_SIZE", "1" },
	{ "SPARDL_LOCAL_RANK", "0" },
	{ "SPARDL_MAX_WRITE", "0" },
	{ "SPARDL_MAX_WRITE", "4096" },
	{ "SPARDL_MAX_WRITE", "4611686018427387904" },
	{ "SPARDL_SHM_SPIN", "0" },
	{ "SPARDL_TRANSPORT", "SHM" },
	{ "SPARDL_VERBS_GID_INDEX", "auto" },
	{ "SPARDL_VERBS_GID_INDEX", "3" },
	{ "SPARDL_VERBS_TIMEOUT", "31" },
	{ "SPARDL_BOOTSTRAP_UIDS", "any" },
	{ "SPARDL_BOOTSTRAP_UIDS", "0,1000" },
	/* Read only to find the rendezvous, which one rank does not need. */
	{ "OMPI_COMM_WORLD_LOCAL_SIZE", "abc" },
};

/* SPARDL_JOB_KEY_FILE: only a private regular file of this user is a key. */
START_TEST(test_key_file)
{
	char dir[] = "/tmp/spardl-keyfile-XXXXXX", path[128], link[160];
	struct spardl_comm *comm = NULL;
	int fd, ret;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/key", dir);
	snprintf(link, sizeof(link), "%s/link", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "s3cret\n", 7), 7);
	close(fd);
	clear_env();
	set("SPARDL_RANK", "0");
	set("SPARDL_SIZE", "1");
	set("SPARDL_TRANSPORT", "shm");
	set("SPARDL_JOB_KEY_FILE", path);
	ret = spardl_comm_create(NULL, &comm);
	ck_assert_msg(ret == 0, "a 0600 key file: %s", spardl_last_error());
	spardl_comm_destroy(comm);
	/* Readable by others. */
	ck_assert_int_eq(chmod(path, 0644), 0);
	ck_assert_int_eq(spardl_comm_create(NULL, &comm), -SPARDL_ERR_ENV);
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "chmod 600"));
	ck_assert_int_eq(chmod(path, 0600), 0);
	/* A symbolic link to it. */
	ck_assert_int_eq(symlink(path, link), 0);
	set("SPARDL_JOB_KEY_FILE", link);
	ck_assert_int_eq(spardl_comm_create(NULL, &comm), -SPARDL_ERR_ENV);
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "symbolic link"));
	/* Only white space. */
	fd = open(path, O_WRONLY | O_TRUNC);
	ck_assert_int_eq(write(fd, " \n", 2), 2);
	close(fd);
	set("SPARDL_JOB_KEY_FILE", path);
	ck_assert_int_eq(spardl_comm_create(NULL, &comm), -SPARDL_ERR_ENV);
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "holds no key"));
	/* A directory. */
	set("SPARDL_JOB_KEY_FILE", dir);
	ck_assert_int_eq(spardl_comm_create(NULL, &comm), -SPARDL_ERR_ENV);
	unlink(link);
	unlink(path);
	rmdir(dir);
}
END_TEST

START_TEST(test_valid_accepted)
{
	const struct env_case *c = &valid[_i];
	struct spardl_comm *comm = NULL;
	int ret;

	clear_env();
	set("SPARDL_RANK", "0");
	set("SPARDL_SIZE", "1");
	if (strcmp(c->name, "SPARDL_TRANSPORT"))
		set("SPARDL_TRANSPORT", "shm");
	set(c->name, c->value);
	ret = spardl_comm_create(NULL, &comm);
	ck_assert_msg(ret == 0, "%s=%s: returned %d (%s): %s", c->name, c->value, ret, spardl_strerror(ret),
		      spardl_last_error());
	ck_assert_str_eq(spardl_comm_transport(comm), "shm");
	spardl_comm_destroy(comm);
}
END_TEST

START_TEST(test_unknown_var_warns)
{
	struct spardl_comm *comm = NULL;
	FILE *log = tmpfile();
	char text[4096];
	size_t n;
	int saved, ret;

	ck_assert_ptr_nonnull(log);
	clear_env();
	set("SPARDL_DEBUG", "warn");
	set("SPARDL_RANK", "0");
	set("SPARDL_SIZE", "1");
	set("SPARDL_TRANSPORT", "shm");
	set("SPARDL_TIMOUT", "5");
	fflush(stderr);
	saved = dup(2);
	ck_assert_int_ge(saved, 0);
	dup2(fileno(log), 2);
	ret = spardl_comm_create(NULL, &comm);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	ck_assert_msg(ret == 0, "returned %d: %s", ret, spardl_last_error());
	spardl_comm_destroy(comm);
	rewind(log);
	n = fread(text, 1, sizeof(text) - 1, log);
	text[n] = 0;
	fclose(log);
	ck_assert_msg(strstr(text, "SPARDL_TIMOUT") && strstr(text, "did you mean SPARDL_TIMEOUT?"),
		      "log: %s", text);
	ck_assert_int_eq(spardl_env_check(), 0);
}
END_TEST

/* Parameters replace the variables they cover: those are not read. */
START_TEST(test_params_replace_vars)
{
	struct spardl_comm_params p;
	struct spardl_comm *comm = NULL;
	int ret;

	clear_env();
	set("SPARDL_SIZE", "abc");
	set("SPARDL_TIMEOUT", "soon");
	set("SPARDL_TRANSPORT", "bogus");
	ck_assert_int_eq(spardl_env_check(), 0);
	spardl_comm_params_init(&p);
	p.field_mask = SPARDL_COMM_PARAM_RANK_SIZE | SPARDL_COMM_PARAM_TIMEOUT | SPARDL_COMM_PARAM_TRANSPORT;
	p.rank = 0;
	p.size = 1;
	p.timeout_ms = 1000;
	p.transport = "shm";
	ret = spardl_comm_create(&p, &comm);
	ck_assert_msg(ret == 0, "returned %d: %s", ret, spardl_last_error());
	spardl_comm_destroy(comm);
	/* Without the transport parameter the variable is read, and wrong. */
	p.field_mask &= ~(uint64_t)SPARDL_COMM_PARAM_TRANSPORT;
	comm = (void *)1;
	ck_assert_int_eq(spardl_comm_create(&p, &comm), -SPARDL_ERR_ENV);
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "SPARDL_TRANSPORT=bogus"));
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "shm, verbs, auto"));
	ck_assert_ptr_eq(comm, (void *)1);
}
END_TEST

/* ---------------------------------------------------------------- */
/* Getters                                                           */

START_TEST(test_long_getter)
{
	long x = 12345;

	clear_env();
	/* Unset: the table's default. */
	ck_assert_int_eq(spardl_env_long("SPARDL_TIMEOUT", &x), 0);
	ck_assert_int_eq(x, 60);
	set("SPARDL_TIMEOUT", "7");
	ck_assert_int_eq(spardl_env_long("SPARDL_TIMEOUT", &x), 0);
	ck_assert_int_eq(x, 7);
	/* Malformed: the variable, its value, the range and the default. */
	set("SPARDL_TIMEOUT", "7s");
	x = 12345;
	ck_assert_int_eq(spardl_env_long("SPARDL_TIMEOUT", &x), -SPARDL_ERR_ENV);
	ck_assert_int_eq(x, 12345);
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "SPARDL_TIMEOUT=7s"));
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "[1, 1000000]"));
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "default 60"));
	/* 0 or at least 64 bytes. */
	set("SPARDL_MAX_WRITE", "63");
	ck_assert_int_eq(spardl_env_long("SPARDL_MAX_WRITE", &x), -SPARDL_ERR_ENV);
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "0 or [64, 2^62]"));
	set("SPARDL_MAX_WRITE", "0");
	ck_assert_int_eq(spardl_env_long("SPARDL_MAX_WRITE", &x), 0);
	ck_assert_int_eq(x, 0);
	set("SPARDL_MAX_WRITE", "1048576");
	ck_assert_int_eq(spardl_env_long("SPARDL_MAX_WRITE", &x), 0);
	ck_assert_int_eq(x, 1048576);
	/* Words beside numbers. */
	ck_assert_int_eq(spardl_env_long("SPARDL_VERBS_GID_INDEX", &x), 0);
	ck_assert_int_eq(x, -1);
	set("SPARDL_VERBS_GID_INDEX", "AUTO");
	ck_assert_int_eq(spardl_env_long("SPARDL_VERBS_GID_INDEX", &x), 0);
	ck_assert_int_eq(x, -1);
	set("SPARDL_VERBS_GID_INDEX", "5");
	ck_assert_int_eq(spardl_env_long("SPARDL_VERBS_GID_INDEX", &x), 0);
	ck_assert_int_eq(x, 5);
}
END_TEST

START_TEST(test_int_getters)
{
	int x = 12345;

	clear_env();
	/* No default: -ENOENT, nothing written. */
	ck_assert_int_eq(spardl_env_int("SPARDL_LOCAL_SIZE", &x), -ENOENT);
	ck_assert_int_eq(x, 12345);
	set("SPARDL_LOCAL_SIZE", "4");
	ck_assert_int_eq(spardl_env_int("SPARDL_LOCAL_SIZE", &x), 0);
	ck_assert_int_eq(x, 4);
	/* A bound known at run time narrows the table's. */
	set("SPARDL_RANK", "4");
	x = 12345;
	ck_assert_int_eq(spardl_env_int_max("SPARDL_RANK", 3, &x), -SPARDL_ERR_ENV);
	ck_assert_int_eq(x, 12345);
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "SPARDL_RANK=4"));
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "[0, 3]"));
	ck_assert_int_eq(spardl_env_int_max("SPARDL_RANK", 4, &x), 0);
	ck_assert_int_eq(x, 4);
	/* Launchers' variables are in the table too. */
	set("OMPI_COMM_WORLD_LOCAL_SIZE", "abc");
	ck_assert_int_eq(spardl_env_int("OMPI_COMM_WORLD_LOCAL_SIZE", &x), -SPARDL_ERR_ENV);
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "OMPI_COMM_WORLD_LOCAL_SIZE=abc"));
}
END_TEST

START_TEST(test_enum_getters)
{
	const char *w = NULL;
	int x = 12345;

	clear_env();
	unsetenv("SPARDL_DEBUG");
	ck_assert_int_eq(spardl_env_enum("SPARDL_DEBUG", &x), 0);
	ck_assert_int_eq(x, 1); /* warn */
	set("SPARDL_DEBUG", "TRACE");
	ck_assert_int_eq(spardl_env_enum("SPARDL_DEBUG", &x), 0);
	ck_assert_int_eq(x, 3);
	set("SPARDL_DEBUG", "2");
	ck_assert_int_eq(spardl_env_enum("SPARDL_DEBUG", &x), 0);
	ck_assert_int_eq(x, 2);
	set("SPARDL_DEBUG", "loud");
	x = 12345;
	ck_assert_int_eq(spardl_env_enum("SPARDL_DEBUG", &x), -SPARDL_ERR_ENV);
	ck_assert_int_eq(x, 12345);
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "SPARDL_DEBUG=loud"));
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "none, warn, info, debug"));
	/* The logger's variant records nothing. */
	set("SPARDL_TIMEOUT", "x");
	ck_assert_int_eq(spardl_env_long("SPARDL_TIMEOUT", &(long){ 0 }), -SPARDL_ERR_ENV);
	ck_assert_int_eq(spardl_env_enum_quiet("SPARDL_DEBUG", &x), -SPARDL_ERR_ENV);
	ck_assert_int_eq(x, 12345);
	ck_assert_ptr_nonnull(strstr(spardl_last_error(), "SPARDL_TIMEOUT=x"));
	set("SPARDL_DEBUG", "info");
	ck_assert_int_eq(spardl_env_enum_quiet("SPARDL_DEBUG", &x), 0);
	ck_assert_int_eq(x, 2);
	/* The canonical word. */
	ck_assert_int_eq(spardl_env_word("SPARDL_TRANSPORT", &w), 0);
	ck_assert_str_eq(w, "auto");
	set("SPARDL_TRANSPORT", "Verbs");
	ck_assert_int_eq(spardl_env_word("SPARDL_TRANSPORT", &w), 0);
	ck_assert_str_eq(w, "verbs");
}
END_TEST

/* A name missing from the table, or read as the wrong kind, is a bug:
 * an assert, or -EINVAL where asserts are compiled out. */
START_TEST(test_name_not_in_table)
{
	long x;

	ck_assert_int_eq(spardl_env_long("SPARDL_NOT_IN_THE_TABLE", &x), -EINVAL);
}
END_TEST

START_TEST(test_wrong_kind)
{
	long x;

	ck_assert_int_eq(spardl_env_long("SPARDL_DEBUG", &x), -EINVAL);
}
END_TEST

/* ---------------------------------------------------------------- */
/* Help and documentation                                            */

/* The variables the library documents it reads, whatever the table says. */
static const char *const required[] = {
	"SPARDL_RANK", "SPARDL_SIZE", "SPARDL_LOCAL_SIZE", "SPARDL_BOOTSTRAP", "SPARDL_JOB_KEY",
	"SPARDL_JOB_KEY_FILE", "SPARDL_BOOTSTRAP_UIDS", "SPARDL_TRANSPORT", "SPARDL_TIMEOUT", "SPARDL_MAX_WRITE",
	"SPARDL_DEBUG", "SPARDL_SHM_SPIN", "SPARDL_VERBS_DEVICE", "SPARDL_VERBS_GID_INDEX", "SPARDL_VERBS_TIMEOUT",
	"SPARDL_VERBS_RETRY_CNT", "SPARDL_VERBS_SPIN", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
	"OMPI_COMM_WORLD_LOCAL_SIZE", "PMI_RANK", "PMI_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "RANK", "WORLD_SIZE",
	"LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "PMIX_NAMESPACE", "SLURM_JOB_ID", "SLURM_STEP_ID",
	"TORCHELASTIC_RUN_ID", "OMPI_MCA_ess_base_jobid",
};

/* name as a whole word of text (RANK is also inside SPARDL_RANK). */
static int has_word(const char *text, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = text; (p = strstr(p, name)); p++) {
		char before = p == text ? ' ' : p[-1], after = p[n];

		if (!(before == '_' || (before >= 'A' && before <= 'Z')) &&
		    !(after == '_' || (after >= 'A' && after <= 'Z')))
			return 1;
	}
	return 0;
}

START_TEST(test_help_lists_every_variable)
{
	const char *help = spardl_env_help(), *name;
	size_t i;

	ck_assert_ptr_nonnull(help);
	ck_assert_ptr_eq(spardl_env_help(), help);
	for (i = 0; (name = spardl_env_name(i)); i++)
		ck_assert_msg(has_word(help, name), "help lacks %s", name);
	ck_assert_uint_gt(i, 30);
	for (i = 0; i < sizeof(required) / sizeof(required[0]); i++)
		ck_assert_msg(has_word(help, required[i]), "help lacks %s", required[i]);
	ck_assert_ptr_nonnull(strstr(help, "[1, 1000000]"));
}
END_TEST

START_TEST(test_markdown_lists_every_variable)
{
	FILE *f = tmpfile();
	static char text[65536];
	const char *name;
	char cell[128];
	size_t n;

	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(spardl_env_markdown(f), 0);
	rewind(f);
	n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = 0;
	fclose(f);
	for (size_t i = 0; (name = spardl_env_name(i)); i++) {
		snprintf(cell, sizeof(cell), "| `%s` |", name);
		ck_assert_msg(strstr(text, cell), "markdown lacks a row for %s", name);
	}
	ck_assert_ptr_nonnull(strstr(text, "| `SPARDL_TIMEOUT` | `60` | [1, 1000000] |"));
}
END_TEST

static Suite *env_suite(void)
{
	Suite *s = suite_create("env");
	TCase *comm = tcase_create("comm_create");
	TCase *get = tcase_create("getters");
	TCase *doc = tcase_create("help");

	tcase_set_timeout(comm, 20);
	tcase_add_loop_test(comm, test_malformed_fails_create, 0, (int)(sizeof(malformed) / sizeof(malformed[0])));
	tcase_add_loop_test(comm, test_valid_accepted, 0, (int)(sizeof(valid) / sizeof(valid[0])));
	tcase_add_test(comm, test_unknown_var_warns);
	tcase_add_test(comm, test_params_replace_vars);
	tcase_add_test(comm, test_key_file);
	suite_add_tcase(s, comm);

	tcase_add_test(get, test_long_getter);
	tcase_add_test(get, test_int_getters);
	tcase_add_test(get, test_enum_getters);
#ifdef NDEBUG
	tcase_add_test(get, test_name_not_in_table);
	tcase_add_test(get, test_wrong_kind);
#else
	tcase_add_test_raise_signal(get, test_name_not_in_table, SIGABRT);
	tcase_add_test_raise_signal(get, test_wrong_kind, SIGABRT);
#endif
	suite_add_tcase(s, get);

	tcase_add_test(doc, test_help_lists_every_variable);
	tcase_add_test(doc, test_markdown_lists_every_variable);
	suite_add_tcase(s, doc);
	return s;
}

int main(void)
{
	return run_unit_suite(env_suite());
}
