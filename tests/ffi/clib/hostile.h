/* Misbehaving C functions for the confinement tests (see hostile.c). */
#ifndef LOOMING_HOSTILE_H
#define LOOMING_HOSTILE_H
int null_deref(void);
int spin(void);
int sleep_long(void);
int kill_parent(void);
int kill_everyone(void);
int fork_bomb(void);
int open_shadow(void);
int open_path(const char *path);
int make_socket(void);
int big_malloc(void);
int add(int a, int b);
#endif
