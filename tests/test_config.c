/* The model configuration: the card's defaults, overrides, and errors that
 * name the key at fault. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "engine/config.h"

static void test_defaults_are_the_card(void **state)
{
    (void)state;
    cfg_model c;
    cfg_default(&c);
    assert_int_equal(c.image_size, 224);
    assert_int_equal(c.n_stages, 4);
    assert_int_equal(c.hidden_sizes[3], 2048);
    assert_int_equal(c.depths[2], 6);
    assert_int_equal(c.embed_dim, 512);
    assert_int_equal(c.num_heads, 8);
    assert_int_equal(c.ffn_dim, 1024);
    assert_int_equal(c.num_layers, 4);
    assert_int_equal(c.vocab_size, 30522);
    assert_int_equal(c.max_positions, 2000);
    assert_int_equal(c.max_len, 80);
    assert_int_equal(c.bos_token_id, 101);
    assert_int_equal(c.eos_token_id, 102);
    assert_int_equal(c.graph_window, 3);
    assert_int_equal(c.graph_steps, 3);
    /* 224 -> stem 112 -> pool 56 -> 56, 28, 14, 7 */
    assert_int_equal(cfg_feature_side(&c), 7);
    assert_int_equal(cfg_memory_tokens(&c), 49);
    rc_error err;
    assert_int_equal(cfg_validate(&c, &err), 0);
}

static void expect_error(const char *json, const char *fragment)
{
    cfg_model c;
    rc_error err = {{0}};
    cfg_default(&c);
    assert_int_equal(cfg_parse(&c, json, strlen(json), "cfg.json", &err), -1);
    if (!strstr(err.msg, fragment) || !strstr(err.msg, "cfg.json"))
        fail_msg("message '%s' lacks '%s'", err.msg, fragment);
}

static void test_errors_name_the_key(void **state)
{
    (void)state;
    expect_error("{\"embed_dims\": 3}", "unknown key \"embed_dims\"");
    expect_error("{\"embed_dim\": \"512\"}", "\"embed_dim\" must be an integer");
    expect_error("{\"embed_dim\": 512.5}", "\"embed_dim\" must be an integer");
    expect_error("{\"depths\": [1, 2]}", "\"hidden_sizes\" and \"depths\" must be given together");
    expect_error("{\"depths\": [1, 2], \"hidden_sizes\": [8, 16, 32]}", "same length");
    expect_error("{\"image_mean\": [0.5, 0.5]}", "\"image_mean\" must have 3 elements");
    expect_error("{\"embed_dim\": 30, \"num_heads\": 8}", "divisible by num_heads");
    expect_error("{\"max_positions\": 80}", "max_positions (80) must exceed max_len (80)");
    expect_error("{\"image_size\": 4}", "image_size must be 8..8192");
    expect_error("[1, 2]", "must be a JSON object");
    expect_error("{\"embed_dim\": ", "not valid JSON");
}

static void test_overrides(void **state)
{
    (void)state;
    const char *json = "{\"_comment\": \"tiny\", \"image_size\": 96, \"hidden_sizes\": [16, 32, 48, 64], "
                       "\"depths\": [1, 2, 2, 1], \"embed_dim\": 32, \"num_heads\": 4, \"layer_norm_eps\": 1e-6}";
    cfg_model c;
    rc_error err = {{0}};
    cfg_default(&c);
    assert_int_equal(cfg_parse(&c, json, strlen(json), "t", &err), 0);
    assert_int_equal(c.hidden_sizes[2], 48);
    assert_int_equal(c.depths[1], 2);
    assert_int_equal(c.embed_dim, 32);
    assert_true(c.layer_norm_eps == 1e-6);
    assert_int_equal(c.vocab_size, 30522); /* untouched keys keep the card's value */
    assert_int_equal(cfg_memory_tokens(&c), 9);
    /* printed and read back, the configuration is the same */
    char *printed = cfg_to_json(&c);
    cfg_model again;
    cfg_default(&again);
    assert_int_equal(cfg_parse(&again, printed, strlen(printed), "printed", &err), 0);
    assert_memory_equal(&c, &again, sizeof c);
    free(printed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_are_the_card),
        cmocka_unit_test(test_errors_name_the_key),
        cmocka_unit_test(test_overrides),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
