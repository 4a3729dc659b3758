#include "common/status.h"

const char *hs_status_name(hs_status s)
{
    switch (s) {
#define HS__STATUS_NAME(name, value, msg)                                                          \
    case HS_##name:                                                                                \
        return #name;
        HS_STATUS_MAP(HS__STATUS_NAME)
#undef HS__STATUS_NAME
    }
    return "UNKNOWN";
}

const char *hs_status_str(hs_status s)
{
    switch (s) {
#define HS__STATUS_MSG(name, value, msg)                                                           \
    case HS_##name:                                                                                \
        return msg;
        HS_STATUS_MAP(HS__STATUS_MSG)
#undef HS__STATUS_MSG
    }
    return "unknown status";
}
