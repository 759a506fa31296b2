/*
 * replay.c: a main() that runs a fuzz target over a corpus without libFuzzer,
 * so `make test` replays tests/fuzz/corpus/<name>/ with the ordinary gcc
 * ASan+UBSan build.
 *
 *   fuzz_<name> DIR_OR_FILE...
 *
 * Every regular file of each directory (in name order) and every file named
 * directly is read into a buffer of exactly its size and passed to
 * LLVMFuzzerTestOneInput once. Output is TAP: "1..N", then "ok K - <file
 * name>" after each input returns. A crash, a sanitizer report or a failed
 * invariant ends the process with a non-zero status right after the
 * "# <file>" line that names the input; tests/run counts that as a failure.
 * An unreadable or empty corpus is "not ok": a replay that replays nothing
 * proves nothing.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/fuzz/fuzz.h"

/* Corpus entries are small by design; a larger file is a mistake. */
#define MAX_INPUT_BYTES (1 << 20)

typedef struct file_list {
    char **paths;
    size_t count, cap;
} file_list;

static bool add_path(file_list *list, const char *dir, const char *name) {
    if (list->count == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 64;
        char **grown = realloc(list->paths, cap * sizeof(*grown));
        if (!grown)
            return false;
        list->paths = grown;
        list->cap = cap;
    }
    size_t len = (dir ? strlen(dir) + 1 : 0) + strlen(name) + 1;
    char *path = malloc(len);
    if (!path)
        return false;
    if (dir)
        snprintf(path, len, "%s/%s", dir, name);
    else
        snprintf(path, len, "%s", name);
    list->paths[list->count++] = path;
    return true;
}

/* The file name without its directory, for the TAP line. */
static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static int by_name(const struct dirent **a, const struct dirent **b) {
    return strcmp((*a)->d_name, (*b)->d_name);
}

/* Regular files of `dir`, sorted; false if it cannot be listed. */
static bool add_directory(file_list *list, const char *dir) {
    struct dirent **entries;
    int n = scandir(dir, &entries, NULL, by_name);
    if (n < 0)
        return false;
    bool ok = true;
    for (int i = 0; i < n; i++) {
        char path[PATH_MAX];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, entries[i]->d_name);
        if (ok && stat(path, &st) == 0 && S_ISREG(st.st_mode))
            ok = add_path(list, dir, entries[i]->d_name);
        free(entries[i]);
    }
    free(entries);
    return ok;
}

/* The whole file in a malloc'd buffer of exactly its size (at least one
 * byte, so an empty input still has a valid pointer); NULL on error. */
static uint8_t *read_file(const char *path, size_t *size) {
    FILE *file = fopen(path, "rb");
    if (!file)
        return NULL;
    uint8_t *data = NULL;
    struct stat st;
    if (fstat(fileno(file), &st) == 0 && st.st_size <= MAX_INPUT_BYTES) {
        *size = (size_t)st.st_size;
        data = malloc(*size ? *size : 1);
        if (data && fread(data, 1, *size, file) != *size) {
            free(data);
            data = NULL;
        }
    }
    fclose(file);
    return data;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    file_list list = {0};
    for (int i = 1; i < argc; i++) {
        struct stat st;
        bool ok = stat(argv[i], &st) == 0 && (S_ISDIR(st.st_mode) ? add_directory(&list, argv[i])
                                                                  : add_path(&list, NULL, argv[i]));
        if (!ok) {
            printf("1..1\nnot ok 1 - cannot read %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
    }
    if (list.count == 0) {
        printf("1..1\nnot ok 1 - no corpus files in %s\n", argv[1]);
        return 1;
    }
    printf("1..%zu\n", list.count);
    int failed = 0;
    for (size_t i = 0; i < list.count; i++) {
        size_t size = 0;
        uint8_t *data = read_file(list.paths[i], &size);
        if (!data) {
            printf("not ok %zu - %s (unreadable or larger than %d bytes)\n", i + 1,
                   base_name(list.paths[i]), MAX_INPUT_BYTES);
            failed = 1;
            continue;
        }
        printf("# %s\n", list.paths[i]);
        fflush(stdout);
        LLVMFuzzerTestOneInput(data, size);
        printf("ok %zu - %s\n", i + 1, base_name(list.paths[i]));
        fflush(stdout);
        free(data);
    }
    for (size_t i = 0; i < list.count; i++)
        free(list.paths[i]);
    free(list.paths);
    return failed;
}
