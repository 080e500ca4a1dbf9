# The installed library: `cmake --install <build> [--prefix P]` puts
#   lib/libringattn.so.<version> (SONAME libringattn.so.<major>.<minor>: the
#     API may change between 0.x minors), or libringattn.a with
#     RINGATTN_SHARED=OFF, made of the rooms' static libraries' objects;
#   include/ringattn/ringattn.h, version.h and the public headers in the
#     source tree's layout (include/ringattn/{runtime,comm,attention}/);
#   bin/ringattn-{bench,run,eval} (with the tools);
#   lib/cmake/ringattn/ (find_package(ringattn CONFIG): ringattn::ringattn,
#     its dependencies found by the config file) and
#   lib/pkgconfig/ringattn.pc.
# tests/consumer builds a project against such an install (ctest
# install_consumer_test).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)
option(RINGATTN_SHARED "libringattn as a shared library (OFF: static)" ON)

configure_file(${PROJECT_SOURCE_DIR}/cmake/version.h.in
               ${PROJECT_BINARY_DIR}/include/ringattn/version.h @ONLY)

# The rooms' static libraries, whole, in one library.
set(ringattn_parts ringattn_base attention_cpu attention comm runtime)
if(RINGATTN_CUDA_FOUND)
  list(APPEND ringattn_parts attention_cuda_kernels attention_cuda_sm90 runtime_cuda_kernels)
endif()
if(RINGATTN_SHARED)
  add_library(ringattn SHARED)
  set_target_properties(ringattn PROPERTIES
    VERSION ${PROJECT_VERSION}
    SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})
else()
  add_library(ringattn STATIC)
endif()
add_library(ringattn::ringattn ALIAS ringattn)
foreach(part IN LISTS ringattn_parts)
  target_sources(ringattn PRIVATE $<TARGET_OBJECTS:${part}>)
endforeach()
set_target_properties(ringattn PROPERTIES LINKER_LANGUAGE CXX EXPORT_NAME ringattn)
target_compile_features(ringattn INTERFACE cxx_std_20)
target_include_directories(ringattn INTERFACE
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
  $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}/ringattn>)
# What the public headers use: Abseil. What the objects need: the rest
# (a static libringattn hands them on to the consumer, the config file
# finds them there).
# libxsmm.a (Debian ships no CMake package for it) by path, before the BLAS
# that it calls for the sizes it does not JIT.
target_link_libraries(ringattn
  PUBLIC absl::status absl::statusor absl::strings absl::time absl::synchronization
  PRIVATE OpenMP::OpenMP_CXX Threads::Threads ${LIBXSMM_LIBRARY} BLAS::BLAS ${CMAKE_DL_LIBS})
# The config file finds what the consumer links: Abseil for a shared
# libringattn, everything its objects need for a static one.
set(ringattn_config_deps "")
if(NOT RINGATTN_SHARED)
  string(APPEND ringattn_config_deps "find_dependency(Threads)\n"
         "find_dependency(OpenMP COMPONENTS CXX)\nset(BLA_VENDOR OpenBLAS)\n"
         "find_dependency(BLAS)\n")
endif()
if(RINGATTN_CUDA_FOUND)
  target_link_libraries(ringattn PRIVATE CUDA::cudart_static)
  if(NOT RINGATTN_SHARED)
    string(APPEND ringattn_config_deps "find_dependency(CUDAToolkit)\n")
  endif()
endif()
if(RINGATTN_UCX_FOUND)
  target_link_libraries(ringattn PRIVATE PkgConfig::UCX)
  if(NOT RINGATTN_SHARED)
    string(APPEND ringattn_config_deps
           "find_dependency(PkgConfig)\npkg_check_modules(UCX REQUIRED IMPORTED_TARGET ucx)\n")
  endif()
endif()
if(RINGATTN_MPI_FOUND)
  target_link_libraries(ringattn PRIVATE MPI::MPI_C)
  if(NOT RINGATTN_SHARED)
    # FindMPI's C component needs the C language in the consumer's project.
    string(APPEND ringattn_config_deps
           "get_property(_ringattn_langs GLOBAL PROPERTY ENABLED_LANGUAGES)\n"
           "if(NOT \"C\" IN_LIST _ringattn_langs)\n  enable_language(C)\nendif()\n"
           "find_dependency(MPI COMPONENTS C)\n")
  endif()
endif()

install(TARGETS ringattn EXPORT ringattnTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT lib
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT lib)
# The public headers: ringattn.h's include closure (tests/consumer checks
# that it compiles from the install alone).
install(FILES include/ringattn/ringattn.h ${PROJECT_BINARY_DIR}/include/ringattn/version.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/ringattn COMPONENT lib)
if(RINGATTN_C_API)
  target_link_libraries(ringattn PUBLIC dlpack::dlpack)
  install(FILES include/ringattn/ringattn_c.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/ringattn
          COMPONENT lib)
  string(APPEND ringattn_config_deps "find_dependency(dlpack CONFIG)\n")
endif()
foreach(header
    attention/dtype.h attention/hd.h attention/mask.h attention/reference.h
    comm/bootstrap/bootstrap.h comm/communicator.h comm/launch.h comm/local/local_comm.h
    comm/world.h runtime/layout.h runtime/ringattn.h runtime/tensor.h)
  get_filename_component(dir ${header} DIRECTORY)
  install(FILES ${header} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/ringattn/${dir} COMPONENT lib)
endforeach()

set(ringattn_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/ringattn)
install(EXPORT ringattnTargets NAMESPACE ringattn:: DESTINATION ${ringattn_cmake_dir}
        COMPONENT lib)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/ringattnConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/ringattnConfig.cmake
                              INSTALL_DESTINATION ${ringattn_cmake_dir})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/ringattnConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/ringattnConfig.cmake
              ${PROJECT_BINARY_DIR}/ringattnConfigVersion.cmake
        DESTINATION ${ringattn_cmake_dir} COMPONENT lib)

# pkg-config: Abseil through its own .pc files (Debian ships them); a
# static library also lists what its objects need.
if(RINGATTN_SHARED)
  set(ringattn_pc_private "")
else()
  set(ringattn_pc_private "-fopenmp ${LIBXSMM_LIBRARY} -lopenblas -ldl -lpthread")
  if(RINGATTN_CUDA_FOUND)
    string(APPEND ringattn_pc_private " ${CUDA_cudart_static_LIBRARY} -lrt")
  endif()
  if(RINGATTN_UCX_FOUND)
    string(APPEND ringattn_pc_private " -lucp -luct -lucs")
  endif()
  if(RINGATTN_MPI_FOUND)
    list(JOIN MPI_C_LIBRARIES " " ringattn_mpi_libs)
    string(APPEND ringattn_pc_private " ${ringattn_mpi_libs}")
  endif()
endif()
configure_file(${PROJECT_SOURCE_DIR}/cmake/ringattn.pc.in ${PROJECT_BINARY_DIR}/ringattn.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/ringattn.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig
        COMPONENT lib)
