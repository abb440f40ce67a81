/* The unwinder entry points Rust's standard library for Redox refers to.
   Redox userspace here is built with panic=abort, so none is ever called to
   unwind: each reports failure (or, for resume, never returns). */
typedef unsigned long uintptr_t;
enum { URC_FAILURE = 9 };
int _Unwind_Backtrace(void *trace, void *arg) { (void)trace; (void)arg; return URC_FAILURE; }
uintptr_t _Unwind_GetIP(void *ctx) { (void)ctx; return 0; }
uintptr_t _Unwind_GetIPInfo(void *ctx, int *before) { (void)ctx; if (before) *before = 0; return 0; }
uintptr_t _Unwind_GetCFA(void *ctx) { (void)ctx; return 0; }
uintptr_t _Unwind_GetRegionStart(void *ctx) { (void)ctx; return 0; }
uintptr_t _Unwind_GetTextRelBase(void *ctx) { (void)ctx; return 0; }
uintptr_t _Unwind_GetDataRelBase(void *ctx) { (void)ctx; return 0; }
uintptr_t _Unwind_GetLanguageSpecificData(void *ctx) { (void)ctx; return 0; }
void *_Unwind_FindEnclosingFunction(void *pc) { (void)pc; return 0; }
void _Unwind_SetGR(void *ctx, int index, uintptr_t value) { (void)ctx; (void)index; (void)value; }
void _Unwind_SetIP(void *ctx, uintptr_t value) { (void)ctx; (void)value; }
int _Unwind_RaiseException(void *exception) { (void)exception; return URC_FAILURE; }
void _Unwind_DeleteException(void *exception) { (void)exception; }
void _Unwind_Resume(void *exception) { (void)exception; __builtin_trap(); }
