/* Tests of pipeline/ptb.h, the PTB-style caption tokenizer.
 *
 * The expected tokens were written by hand from the Stanford PTBTokenizer's
 * conventions (CoreNLP 3.4.1 as pycocoevalcap runs it: -preserveLines
 * -lowerCase) followed by pycocoevalcap's removal of
 * '' ' `` ` -LRB- -RRB- -LCB- -RCB- . ? ! , : - -- ... ;
 * Those conventions, as they apply to captions:
 * - lower-case everything; brackets ( [ < become -lrb-, ) ] > -rrb-,
 *   { } -lcb- -rcb-, and these lower-case forms are not in the removal list;
 * - hyphenated words and numbers stay whole (well-defined, 2.5-cm, 3-5,
 *   18f-fdg), a decimal number is one token (2.5, 1,000) but a unit glued to
 *   it after the decimal is split (1.5t -> 1.5 t), digits and letters
 *   together are one token (3t, o2, 4th);
 * - a slash compound or date keeps its slashes escaped (t1\/t2, 12\/03\/2019);
 * - n't, 's, 're ... are split off (do n't, ca n't, patient 's), cannot is
 *   can not, curly apostrophes become ';
 * - quotes become `` '' ` ' and en/em dashes --, all removed;
 * - a period is split off except after a known abbreviation (dr. st. no.
 *   vs. e.g. i.e. etc. and single letters); % ° ± × ≥ → ~ = are tokens.
 * Where this tokenizer may differ from the Java one is listed in ptb.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "pipeline/ptb.h"

static void expect_tokens(const char *text, size_t len, const ptb_options *opt, const char *expected)
{
    rc_error err = {{0}};
    char *got = ptb_tokenize(text, len, opt, &err);
    if (!got)
        fail_msg("ptb_tokenize failed: %s", err.msg);
    if (strcmp(got, expected) != 0)
        fail_msg("caption: %s\n  got:      [%s]\n  expected: [%s]", text, got, expected);
    free(got);
}

typedef struct {
    const char *caption;
    const char *tokens; // pycocoevalcap's tokenised text
} example;

/* Radiology captions in the style of ROCO, with their tokenisation. */
static const example captions[] = {
    {"Axial CT scan showing a 2.5-cm mass (arrow) in the left lobe.",
     "axial ct scan showing a 2.5-cm mass -lrb- arrow -rrb- in the left lobe"},
    {"T1/T2-weighted MRI of the brain shows no abnormality.",
     "t1\\/t2-weighted mri of the brain shows no abnormality"},
    {"Chest X-ray: no pneumothorax; patient's heart size is normal.",
     "chest x-ray no pneumothorax patient 's heart size is normal"},
    {"A 45-year-old man with a 3-5 mm nodule in the right upper lobe.",
     "a 45-year-old man with a 3-5 mm nodule in the right upper lobe"},
    {"Contrast-enhanced CT (a) and MRI (b) demonstrate a 10% increase...",
     "contrast-enhanced ct -lrb- a -rrb- and mri -lrb- b -rrb- demonstrate a 10 % increase"},
    {"Sagittal T2-weighted image: high signal at C5\u2013C6 (arrowhead).",
     "sagittal t2-weighted image high signal at c5 c6 -lrb- arrowhead -rrb-"},
    {"The patient didn't receive contrast; the study wasn't diagnostic.",
     "the patient did n't receive contrast the study was n't diagnostic"},
    {"18F-FDG PET/CT shows intense uptake (SUVmax 12.4) in the mediastinum.",
     "18f-fdg pet\\/ct shows intense uptake -lrb- suvmax 12.4 -rrb- in the mediastinum"},
    {"Ultrasound of the liver... no focal lesion.", "ultrasound of the liver no focal lesion"},
    {"\"Target sign\" on CT, consistent with intussusception.",
     "target sign on ct consistent with intussusception"},
    {"Follow-up MRI 6 months later, i.e., after chemotherapy.",
     "follow-up mri 6 months later i.e. after chemotherapy"},
    {"Lateral view of the knee (Fig. 2A) shows joint effusion.",
     "lateral view of the knee -lrb- fig 2a -rrb- shows joint effusion"},
    {"CT angiography: 70% stenosis of the left ICA vs. 50% on the right.",
     "ct angiography 70 % stenosis of the left ica vs. 50 % on the right"},
    {"Dr. Smith's case: a well-defined, round, 1.5 \u00d7 2.0 cm lesion.",
     "dr. smith 's case a well-defined round 1.5 \u00d7 2.0 cm lesion"},
    {"Coronal reformat demonstrating the 'double duct' sign.",
     "coronal reformat demonstrating the double duct sign"},
    {"Non-contrast head CT shows a hyperdense MCA sign [arrow].",
     "non-contrast head ct shows a hyperdense mca sign -lrb- arrow -rrb-"},
    {"Axial FLAIR images at 1.5T and 3T.", "axial flair images at 1.5 t and 3t"},
    {"Bone scan (99mTc-MDP) with increased uptake at L4/L5.",
     "bone scan -lrb- 99mtc-mdp -rrb- with increased uptake at l4\\/l5"},
    {"The mass measures approx. 4 x 3 cm.", "the mass measures approx 4 x 3 cm"},
    {"Mammogram: BI-RADS 4; biopsy recommended?", "mammogram bi-rads 4 biopsy recommended"},
    {"Hounsfield units of -20 to +30 HU.", "hounsfield units of -20 to +30 hu"},
    {"Gd-DTPA enhanced T1WI shows ring enhancement!", "gd-dtpa enhanced t1wi shows ring enhancement"},
    {"PA and lateral chest radiographs (12/03/2019) are unremarkable.",
     "pa and lateral chest radiographs -lrb- 12\\/03\\/2019 -rrb- are unremarkable"},
    {"Echo shows an ejection fraction of 35\u201340%.", "echo shows an ejection fraction of 35 40 %"},
    {"MRI of the patient\u2019s left knee \u2014 a torn ACL.", "mri of the patient 's left knee a torn acl"},
    {"\u201cHoneycombing\u201d at the lung bases.", "honeycombing at the lung bases"},
    {"Abdominal CT: the kidneys can't be seen clearly.", "abdominal ct the kidneys ca n't be seen clearly"},
    {"Sonography reveals a 5 mm \u00d7 4 mm hypoechoic nodule (TI-RADS 4).",
     "sonography reveals a 5 mm \u00d7 4 mm hypoechoic nodule -lrb- ti-rads 4 -rrb-"},
    {"PET/CT: SUV 2.5 \u2192 7.8 after 3 months.", "pet\\/ct suv 2.5 \u2192 7.8 after 3 months"},
    {"The aneurysm (diameter 5.5 cm) is infrarenal; repair is planned.",
     "the aneurysm -lrb- diameter 5.5 cm -rrb- is infrarenal repair is planned"},
    {"Lung window: ground-glass opacities {bilateral} and septal thickening.",
     "lung window ground-glass opacities -lcb- bilateral -rcb- and septal thickening"},
    {"Plain film of the pelvis, AP view, showing a fracture of the femoral neck.",
     "plain film of the pelvis ap view showing a fracture of the femoral neck"},
    {"Transvaginal US: endometrial thickness 1.2 cm, ovaries normal.",
     "transvaginal us endometrial thickness 1.2 cm ovaries normal"},
    {"Cerebral angiogram shows a 3 mm aneurysm at the ACoA... treated with coils.",
     "cerebral angiogram shows a 3 mm aneurysm at the acoa treated with coils"},
    {"The patient's O2 saturation was 88%, she couldn't lie flat.",
     "the patient 's o2 saturation was 88 % she could n't lie flat"},
    {"Chest CT (lung window) \u2013 no nodules > 4 mm.", "chest ct -lrb- lung window -rrb- no nodules -rrb- 4 mm"},
    {"Knee MRI, PD-weighted fat-sat: bone marrow oedema.", "knee mri pd-weighted fat-sat bone marrow oedema"},
    {"X-ray of the hand: fractures of the 4th and 5th metacarpals.",
     "x-ray of the hand fractures of the 4th and 5th metacarpals"},
    {"DWI/ADC mismatch in the left MCA territory (b=1000 s/mm\u00b2).",
     "dwi\\/adc mismatch in the left mca territory -lrb- b = 1000 s\\/mm \u00b2 -rrb-"},
    {"Follow-up at 3, 6 and 12 months showed no recurrence.", "follow-up at 3 6 and 12 months showed no recurrence"},
    {"Renal US: the right kidney measures 10.5 cm; the left, 11 cm.",
     "renal us the right kidney measures 10.5 cm the left 11 cm"},
    {"Arrows: the \"comet tail\" artifact; arrowheads: B-lines.", "arrows the comet tail artifact arrowheads b-lines"},
    {"CT shows a 2x2 cm cyst and a 1.5 x 1.0-cm calcified nodule.",
     "ct shows a 2x2 cm cyst and a 1.5 x 1.0-cm calcified nodule"},
    {"Ultrasound-guided biopsy (18-gauge needle) of the thyroid nodule.",
     "ultrasound-guided biopsy -lrb- 18-gauge needle -rrb- of the thyroid nodule"},
    {"MRCP: CBD dilated to 12 mm ... no stones seen.", "mrcp cbd dilated to 12 mm no stones seen"},
    {"Sagittal CT: L1 vertebral body height loss (~30%).", "sagittal ct l1 vertebral body height loss -lrb- ~ 30 % -rrb-"},
    {"Infant hip US: alpha angle 55\u00b0, beta angle 60\u00b0 (Graf IIa).",
     "infant hip us alpha angle 55 \u00b0 beta angle 60 \u00b0 -lrb- graf iia -rrb-"},
    {"The \u2018target\u2019 sign \u2014 intussusception.", "the target sign intussusception"},
    {"No. 3 rib fracture, St. Mary's Hospital.", "no. 3 rib fracture st. mary 's hospital"},
    {"Findings: e.g. cysts, haemangiomas, etc.", "findings e.g. cysts haemangiomas etc."},
    {"CT cannot exclude a small leak; it's likely post-operative.",
     "ct can not exclude a small leak it 's likely post-operative"},
    {"Liver lesion 2/3 enhancing, \u00bd of the lobe, ratio 1:2.", "liver lesion 2\\/3 enhancing 1\\/2 of the lobe ratio 1:2"},
    {"Lesion in the \u00e9paule (shoulder); Gr\u00f6\u00dfe 3,5 cm.", "lesion in the \u00e9paule -lrb- shoulder -rrb- gr\u00f6\u00dfe 3,5 cm"},
    {"\u00c9CHO: L\u00c9SION \u00c0 GAUCHE, \u0394 = 5 \u00b5m.", "\u00e9cho l\u00e9sion \u00e0 gauche \u03b4 = 5 \u00b5m"},
};

static void test_radiology_captions(void **state)
{
    (void)state;
    const size_t n = sizeof captions / sizeof captions[0];
    assert_true(n >= 40);
    for (size_t i = 0; i < n; i++)
        expect_tokens(captions[i].caption, strlen(captions[i].caption), NULL, captions[i].tokens);
}

/* The tokens before pycocoevalcap's removal and lower-casing: LaTeX quotes,
 * -LRB-, --, ... and the period are there. */
static void test_raw_ptb_tokens(void **state)
{
    (void)state;
    ptb_options raw = {.keep_case = 1, .keep_punctuation = 1};
    const char *text = "\"Ground-glass\" opacities (GGO)... don't resolve -- see [1]; 'rare'.";
    expect_tokens(text, strlen(text), &raw,
                  "`` Ground-glass '' opacities -LRB- GGO -RRB- ... do n't resolve -- see -LRB- 1 -RRB- ; ` rare ' .");
    /* lower-cased only: the bracket tokens become -lrb- and would survive the removal list */
    ptb_options lower = {.keep_punctuation = 1};
    expect_tokens("Mass (A).", 9, &lower, "mass -lrb- a -rrb- .");
    /* three or four hyphens are a dash (--), one is a hyphen, five stay as they are */
    expect_tokens("a - b --- c ---- d ----- e", 26, &raw, "a - b -- c -- d ----- e");
    /* ellipses: ..., . . . and the Unicode character all become ... */
    expect_tokens("lobe... b . . . c \u2026 d", strlen("lobe... b . . . c \u2026 d"), &raw, "lobe ... b ... c ... d");
    /* but a single letter takes the first period as an abbreviation's ("a."),
     * and two periods are no ellipsis */
    expect_tokens("a... b", 6, &raw, "a. . . b");
}

/* The option to drop the bracket tokens pycocoevalcap keeps. */
static void test_drop_brackets(void **state)
{
    (void)state;
    ptb_options drop = {.drop_brackets = 1};
    const char *text = "Axial CT (arrow) [IV] {a} <5 mm>.";
    expect_tokens(text, strlen(text), &drop, "axial ct arrow iv a 5 mm");
    expect_tokens(text, strlen(text), NULL, "axial ct -lrb- arrow -rrb- -lrb- iv -rrb- -lcb- a -rcb- -lrb- 5 mm -rrb-");
}

/* Empty and degenerate inputs; NUL bytes, newlines and malformed UTF-8. */
static void test_edge_inputs(void **state)
{
    (void)state;
    expect_tokens("", 0, NULL, "");
    expect_tokens("...", 3, NULL, "");
    expect_tokens(" ; , : ! ? ", 11, NULL, "");
    expect_tokens("a\0b", 3, NULL, "a b");
    expect_tokens("left\nlobe", 9, NULL, "left lobe");
    expect_tokens("left\r\nlobe", 10, NULL, "left lobe");
    /* a malformed byte is U+FFFD to Java, an untokenizable character: dropped, splitting the word */
    expect_tokens("ab\xff" "cd \xc3", 7, NULL, "ab cd");
    /* an emoji (outside the BMP) is dropped too */
    expect_tokens("cyst \xf0\x9f\x98\x80 ok", 12, NULL, "cyst ok");
}

/* Abbreviations keep their period; other words lose it. */
static void test_abbreviations(void **state)
{
    (void)state;
    const char *text = "Dr. Lee vs. Prof. Kim, cf. Fig. 3, U.S. data, type B. Approx. 5 cm. Mass. mass.";
    /* dr. vs. prof. cf. u.s. b. keep their period (titles, vs, cf, acronyms,
     * single letters); fig approx cm lose it; "Mass." keeps it (Mass. is a
     * state abbreviation, capital M only), "mass." does not. */
    expect_tokens(text, strlen(text), NULL, "dr. lee vs. prof. kim cf. fig 3 u.s. data type b. approx 5 cm mass. mass");
}

/* Contractions and possessives. */
static void test_contractions(void **state)
{
    (void)state;
    const char *text = "It's the patients' and the patient's; I'm sure they're fine, we'll see, won't we? CANNOT.";
    expect_tokens(text, strlen(text), NULL,
                  "it 's the patients and the patient 's i 'm sure they 're fine we 'll see wo n't we can not");
}

/* Numbers: decimals, thousands, times, signs, fractions, dates, ranges. */
static void test_numbers(void **state)
{
    (void)state;
    const char *text = "1,000 cGy at 9:30, -5 to +5, .5 mm, 3 1/2 cm, 12-05-2020, 10-20 mm, 2.5-3 cm.";
    /* "3 1/2" is one token whose space becomes a no-break space (U+00A0),
     * as the Java tokenizer's normalizeSpace does */
    expect_tokens(text, strlen(text), NULL,
                  "1,000 cgy at 9:30 -5 to +5 .5 mm 3\xc2\xa0" "1\\/2 cm 12-05-2020 10-20 mm 2.5-3 cm");
}

/* URLs, e-mail addresses, symbols. */
static void test_urls_and_symbols(void **state)
{
    (void)state;
    const char *text = "See https://radiopaedia.org/cases/42, www.rsna.org and mail@hospital.org for "
                       "\u00b1 2 SD, \u2265 3, 50 \u00b5Sv & more.";
    expect_tokens(text, strlen(text), NULL,
                  "see https:\\/\\/radiopaedia.org\\/cases\\/42 www.rsna.org and mail@hospital.org for "
                  "\u00b1 2 sd \u2265 3 50 \u00b5sv & more");
}

/* A long caption and a pathological one (one long run with a token
 * boundary every two characters) finish, and the result is sane. */
static void test_long_inputs(void **state)
{
    (void)state;
    size_t n = 200000;
    char *text = malloc(n + 1);
    for (size_t i = 0; i < n; i += 2) {
        text[i] = 'a';
        text[i + 1] = '.';
    }
    text[n] = '\0';
    rc_error err = {{0}};
    char *got = ptb_tokenize(text, n, NULL, &err);
    assert_non_null(got);
    assert_true(strlen(got) > 0);
    free(got);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_radiology_captions),
        cmocka_unit_test(test_raw_ptb_tokens),
        cmocka_unit_test(test_drop_brackets),
        cmocka_unit_test(test_edge_inputs),
        cmocka_unit_test(test_abbreviations),
        cmocka_unit_test(test_contractions),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_urls_and_symbols),
        cmocka_unit_test(test_long_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
