/* The executable of the masquerade test: everything runs in libmasq.so (see masq.c). */
void masq_main(int argc, char **argv);
int main(int argc, char **argv) {
    masq_main(argc, argv);
    return 1;
}
