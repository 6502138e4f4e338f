#include "hello.h"

#include <stdio.h>

const char *hello(const char *name)
{
  static char greeting[128];
  snprintf(greeting, sizeof greeting, "Hello, %s!", name);
  return greeting;
}
