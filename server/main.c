#include <stdio.h>

#include "hs-config.h"

int main(void)
{
    printf("hetserve %s\n", HS_VERSION);
    return 0;
}
