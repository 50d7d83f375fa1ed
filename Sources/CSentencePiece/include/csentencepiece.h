#ifndef CSENTENCEPIECE_H
#define CSENTENCEPIECE_H
#ifdef __cplusplus
extern "C" {
#endif
// Placeholder; the tokenizer work fills this in.
int spm_shim_version(void);
#ifdef __cplusplus
}
#endif
#endif
