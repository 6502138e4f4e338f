#include "hello.h"

#include <stdio.h>
#include <string.h>

int main(void)
{
  const char *expected = "Hello, World!";
  const char *got = hello("World");
  if (strcmp(got, expected) != 0)
  {
    fprintf(stderr, "test_hello: expected \"%s\", got \"%s\"\n", expected, got);
    return 1;
  }
  printf("test_hello: ok\n");
  return 0;
}
