#ifndef HELLO_H
#define HELLO_H

/* Returns a greeting for name ("Hello, <name>!") in a static buffer. */
const char *hello(const char *name);

#endif
