/* The C entry point of a per-message program linked with musl (scripts/musl-link,
 * which compiles this once per program with -DSWIFT_MAIN=<module>_main). musl,
 * unlike glibc, gives constructors no arguments, so the arguments are handed to
 * the C shims here before the Swift code starts. */
void qs_set_arguments(int argc, char **argv);
int SWIFT_MAIN(int argc, char **argv);

int main(int argc, char **argv)
{
    qs_set_arguments(argc, argv);
    return SWIFT_MAIN(argc, argv);
}
