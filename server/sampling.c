/* placeholder */
typedef int hs__placeholder_sampling;
