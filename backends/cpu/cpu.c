/* placeholder: replaced as the module lands */
typedef int hs__placeholder_cpu;
