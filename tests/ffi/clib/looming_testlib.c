#include <string.h>

#include "looming_testlib.h"

int64_t looming_union_int(union looming_number number) { return number.i; }

double looming_union_double(union looming_number number) { return number.d; }

union looming_number looming_union_make(int64_t i) {
    union looming_number number;
    number.i = i;
    return number;
}

struct looming_point looming_point_scale(struct looming_point point, double factor) {
    struct looming_point scaled = {point.x * factor, point.y * factor};
    return scaled;
}

double looming_apply_twice(double (*f)(double), double x) { return f(f(x)); }

int32_t looming_mixed_sum(const struct looming_mixed *mixed) {
    int32_t sum = mixed->tag + mixed->count + (int32_t)mixed->weight;
    for (int i = 0; i < 6 && mixed->name[i]; i++) sum += mixed->name[i];
    for (int i = 0; i < 3; i++) sum += mixed->flags[i];
    return sum;
}

void looming_mixed_fill(struct looming_mixed *mixed, int32_t seed) {
    mixed->tag = (uint8_t)seed;
    mixed->count = seed * 2;
    mixed->weight = seed / 4.0;
    memcpy(mixed->name, "fill", 5);
    for (int i = 0; i < 3; i++) mixed->flags[i] = (uint16_t)(seed + i);
}

int64_t looming_sum_array(const int64_t *values, uint32_t count) {
    int64_t sum = 0;
    for (uint32_t i = 0; i < count; i++) sum += values[i];
    return sum;
}

int looming_read_null(const int *pointer) { return *pointer; }

uint8_t looming_negate_bool(uint8_t flag) { return !flag; }

float looming_half(float value) { return value / 2; }
