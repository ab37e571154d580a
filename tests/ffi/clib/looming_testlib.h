/* A small C library the FFI tests build, for cases no system library offers. */
#ifndef LOOMING_TESTLIB_H
#define LOOMING_TESTLIB_H

#include <stdint.h>

union looming_number {
    int64_t i;
    double d;
};

struct looming_point {
    double x;
    double y;
};

struct looming_mixed {
    uint8_t tag;
    int32_t count;
    double weight;
    char name[6];
    uint16_t flags[3];
};

int64_t looming_union_int(union looming_number number);
double looming_union_double(union looming_number number);
union looming_number looming_union_make(int64_t i);
struct looming_point looming_point_scale(struct looming_point point, double factor);
double looming_apply_twice(double (*f)(double), double x);
int32_t looming_mixed_sum(const struct looming_mixed *mixed);
void looming_mixed_fill(struct looming_mixed *mixed, int32_t seed);
int64_t looming_sum_array(const int64_t *values, uint32_t count);
int looming_read_null(const int *pointer);
uint8_t looming_negate_bool(uint8_t flag);
float looming_half(float value);

#endif
