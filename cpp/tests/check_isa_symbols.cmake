# ctest: the objects compiled for a newer ISA (-march=x86-64-v3/v4) must define no weak or unique
# symbols (nm W/V/u): an inline function or template with external linkage compiled there could be
# picked by the linker for a baseline caller and crash an older CPU. Usage:
#   cmake -DNM=<nm> -DOBJECTS=<a.o|b.o|...> -P check_isa_symbols.cmake
string(REPLACE "|" ";" objects "${OBJECTS}")
set(bad "")
foreach(obj IN LISTS objects)
  execute_process(COMMAND "${NM}" -C "${obj}" OUTPUT_VARIABLE out RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${NM} failed on ${obj}")
  endif()
  string(REGEX MATCHALL "[^\n]* [WVwvu] [^\n]*" weak "${out}")
  foreach(line IN LISTS weak)
    string(APPEND bad "  ${obj}: ${line}\n")
  endforeach()
endforeach()
list(LENGTH objects count)
if(bad)
  message(FATAL_ERROR "weak symbols in ISA objects:\n${bad}")
endif()
message(STATUS "${count} ISA objects, no weak symbols")
